"""The committed stubs are what the protos generate, and the protos keep
Envoy's wire contract (packages, names, field numbers, types)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from sidecar._proto.envoy.config.core.v3 import base_pb2
from sidecar._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from sidecar._proto.envoy.type.v3 import http_status_pb2
from sidecar._proto.google.rpc import code_pb2, status_pb2

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "sidecar" / "_proto"


def _tree(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(out)], check=True)
    fresh, committed = _tree(out), _tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run `make protos` and commit sidecar/_proto"
    stale = [name for name in fresh if not filecmp.cmp(fresh[name], committed[name], shallow=False)]
    assert stale == [], f"stale generated files (run `make protos`): {stale}"


T = FieldDescriptor
# (message full name, field name, number, type) for every field Envoy reads or
# writes in a check, from Envoy's ext_authz v3 protos.
WIRE = [
    ("envoy.service.auth.v3.CheckRequest", "attributes", 1, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext", "source", 1, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext", "destination", 2, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext", "request", 4, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext", "context_extensions", 10, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext", "metadata_context", 11, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext", "tls_session", 12, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext", "route_metadata_context", 13, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext.Peer", "address", 1, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext.Peer", "service", 2, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.Peer", "labels", 3, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext.Peer", "principal", 4, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.Peer", "certificate", 5, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.Request", "time", 1, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext.Request", "http", 2, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "id", 1, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "method", 2, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "headers", 3, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "path", 4, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "host", 5, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "scheme", 6, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "query", 7, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "fragment", 8, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "size", 9, T.TYPE_INT64),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "protocol", 10, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "body", 11, T.TYPE_STRING),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "raw_body", 12, T.TYPE_BYTES),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", "header_map", 13, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.AttributeContext.TLSSession", "sni", 1, T.TYPE_STRING),
    ("envoy.service.auth.v3.CheckResponse", "status", 1, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.CheckResponse", "denied_response", 2, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.CheckResponse", "ok_response", 3, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.CheckResponse", "dynamic_metadata", 4, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.CheckResponse", "error_response", 5, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.DeniedHttpResponse", "status", 1, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.DeniedHttpResponse", "headers", 2, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.DeniedHttpResponse", "body", 3, T.TYPE_STRING),
    ("envoy.service.auth.v3.OkHttpResponse", "headers", 2, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.OkHttpResponse", "dynamic_metadata", 3, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.OkHttpResponse", "headers_to_remove", 5, T.TYPE_STRING),
    ("envoy.service.auth.v3.OkHttpResponse", "response_headers_to_add", 6, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.OkHttpResponse", "query_parameters_to_set", 7, T.TYPE_MESSAGE),
    ("envoy.service.auth.v3.OkHttpResponse", "query_parameters_to_remove", 8, T.TYPE_STRING),
    ("envoy.config.core.v3.HeaderValueOption", "header", 1, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.HeaderValueOption", "append", 2, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.HeaderValueOption", "append_action", 3, T.TYPE_ENUM),
    ("envoy.config.core.v3.HeaderValueOption", "keep_empty_value", 4, T.TYPE_BOOL),
    ("envoy.config.core.v3.HeaderValue", "key", 1, T.TYPE_STRING),
    ("envoy.config.core.v3.HeaderValue", "value", 2, T.TYPE_STRING),
    ("envoy.config.core.v3.HeaderValue", "raw_value", 3, T.TYPE_BYTES),
    ("envoy.config.core.v3.HeaderMap", "headers", 1, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.QueryParameter", "key", 1, T.TYPE_STRING),
    ("envoy.config.core.v3.QueryParameter", "value", 2, T.TYPE_STRING),
    ("envoy.config.core.v3.Metadata", "filter_metadata", 1, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.Metadata", "typed_filter_metadata", 2, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.Address", "socket_address", 1, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.Address", "pipe", 2, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.Address", "envoy_internal_address", 3, T.TYPE_MESSAGE),
    ("envoy.config.core.v3.SocketAddress", "protocol", 1, T.TYPE_ENUM),
    ("envoy.config.core.v3.SocketAddress", "address", 2, T.TYPE_STRING),
    ("envoy.config.core.v3.SocketAddress", "port_value", 3, T.TYPE_UINT32),
    ("envoy.config.core.v3.SocketAddress", "named_port", 4, T.TYPE_STRING),
    ("envoy.config.core.v3.Pipe", "path", 1, T.TYPE_STRING),
    ("envoy.config.core.v3.Pipe", "mode", 2, T.TYPE_UINT32),
    ("envoy.type.v3.HttpStatus", "code", 1, T.TYPE_ENUM),
    ("google.rpc.Status", "code", 1, T.TYPE_INT32),
    ("google.rpc.Status", "message", 2, T.TYPE_STRING),
    ("google.rpc.Status", "details", 3, T.TYPE_MESSAGE),
]
_POOL = external_auth_pb2.DESCRIPTOR.pool


@pytest.mark.parametrize(("message", "name", "number", "kind"), WIRE)
def test_wire_contract(message: str, name: str, number: int, kind: int) -> None:
    field = _POOL.FindMessageTypeByName(message).fields_by_name[name]
    assert (field.number, field.type) == (number, kind)


def test_maps_oneofs_and_enums() -> None:
    http = attribute_context_pb2.AttributeContext.HttpRequest.DESCRIPTOR
    headers_entry = http.fields_by_name["headers"].message_type
    assert headers_entry is not None and headers_entry.GetOptions().map_entry
    response = external_auth_pb2.CheckResponse.DESCRIPTOR
    assert [f.name for f in response.oneofs_by_name["http_response"].fields] == [
        "denied_response",
        "ok_response",
        "error_response",
    ]
    action = base_pb2.HeaderValueOption.HeaderAppendAction
    assert [
        action.Value(n)
        for n in (
            "APPEND_IF_EXISTS_OR_ADD",
            "ADD_IF_ABSENT",
            "OVERWRITE_IF_EXISTS_OR_ADD",
            "OVERWRITE_IF_EXISTS",
        )
    ] == [0, 1, 2, 3]
    assert http_status_pb2.StatusCode.Value("Forbidden") == 403
    assert code_pb2.PERMISSION_DENIED == 7 and code_pb2.UNAUTHENTICATED == 16
    assert status_pb2.Status.DESCRIPTOR.full_name == "google.rpc.Status"
    service = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
    assert service.full_name == "envoy.service.auth.v3.Authorization"
    assert service.methods_by_name["Check"].input_type.full_name == "envoy.service.auth.v3.CheckRequest"
