"""AttributeContext -> the ``attributes`` of the input document.

The plugin's post-#631 ``protomap`` rendering (``reference/opa-envoy-compat.md``
section 2): proto JSON names, unpopulated fields left out, Struct as plain
JSON, Timestamp as ``{"seconds", "nanos"}``, int64 and enums as numbers, bytes
as base64, Any as ``{"typeUrl", "value"}``.

Same output as the plugin's reflection walk (fields present/non-zero only,
JSON names), written out per message because it runs on every request: on
a 20-header request it measured ~28 us against ~32 us for a generic
ListFields() walk with cached per-message plans, ~39 us for a plain one and
~67 us for json_format.MessageToDict. A unit test compares it with a
generic walk over a request with every field set, so it cannot silently
fall behind the protos. Unknown fields are ignored, as Range ignores them.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from google.protobuf import any_pb2, struct_pb2, timestamp_pb2

from sidecar._proto.envoy.config.core.v3 import base_pb2
from sidecar._proto.envoy.service.auth.v3 import attribute_context_pb2

__all__ = ["render_attributes"]


def render_attributes(
    ac: attribute_context_pb2.AttributeContext, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """``headers``: the request's headers as the sidecar read them
    (sidecar/envoy/headers.py: from the raw header map when Envoy sent one),
    rendered as they are instead of from the string map."""
    out: dict[str, Any] = {}
    if ac.HasField("source"):
        out["source"] = _peer(ac.source)
    if ac.HasField("destination"):
        out["destination"] = _peer(ac.destination)
    if ac.HasField("request"):
        out["request"] = _request(ac.request, headers)
    if ac.context_extensions:
        out["contextExtensions"] = dict(ac.context_extensions)
    if ac.HasField("metadata_context"):
        out["metadataContext"] = _metadata(ac.metadata_context)
    if ac.HasField("route_metadata_context"):
        out["routeMetadataContext"] = _metadata(ac.route_metadata_context)
    if ac.HasField("tls_session"):
        sni = ac.tls_session.sni
        out["tlsSession"] = {"sni": sni} if sni else {}
    return out


def _peer(peer: attribute_context_pb2.AttributeContext.Peer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.HasField("address"):
        out["address"] = _address(peer.address)
    if peer.service:
        out["service"] = peer.service
    if peer.labels:
        out["labels"] = dict(peer.labels)
    if peer.principal:
        out["principal"] = peer.principal
    if peer.certificate:
        out["certificate"] = peer.certificate
    return out


def _address(address: base_pb2.Address) -> dict[str, Any]:
    kind = address.WhichOneof("address")
    if kind == "socket_address":
        return {"socketAddress": _socket_address(address.socket_address)}
    if kind == "pipe":
        pipe = address.pipe
        out: dict[str, Any] = {}
        if pipe.path:
            out["path"] = pipe.path
        if pipe.mode:
            out["mode"] = pipe.mode
        return {"pipe": out}
    if kind == "envoy_internal_address":
        internal = address.envoy_internal_address
        out = {}
        # A oneof member is present once set, even to "".
        if internal.HasField("server_listener_name"):
            out["serverListenerName"] = internal.server_listener_name
        if internal.endpoint_id:
            out["endpointId"] = internal.endpoint_id
        return {"envoyInternalAddress": out}
    return {}


def _socket_address(sa: base_pb2.SocketAddress) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sa.protocol:
        out["protocol"] = sa.protocol  # enum as its number
    if sa.address:
        out["address"] = sa.address
    port = sa.WhichOneof("port_specifier")
    if port == "port_value":
        out["portValue"] = sa.port_value  # present even when 0 (oneof member)
    elif port == "named_port":
        out["namedPort"] = sa.named_port
    if sa.resolver_name:
        out["resolverName"] = sa.resolver_name
    if sa.ipv4_compat:
        out["ipv4Compat"] = True
    if sa.network_namespace_filepath:
        out["networkNamespaceFilepath"] = sa.network_namespace_filepath
    return out


def _request(
    req: attribute_context_pb2.AttributeContext.Request, headers: dict[str, str] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if req.HasField("time"):
        out["time"] = _timestamp(req.time)
    if req.HasField("http"):
        out["http"] = _http(req.http, headers)
    return out


def _timestamp(ts: timestamp_pb2.Timestamp) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ts.seconds:
        out["seconds"] = ts.seconds
    if ts.nanos:
        out["nanos"] = ts.nanos
    return out


def _http(
    http: attribute_context_pb2.AttributeContext.HttpRequest, headers: dict[str, str] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if http.id:
        out["id"] = http.id
    if http.method:
        out["method"] = http.method
    if headers is not None:
        out["headers"] = headers
    elif http.headers:
        out["headers"] = dict(http.headers)
    if http.HasField("header_map"):
        out["headerMap"] = _header_map(http.header_map)
    if http.path:
        out["path"] = http.path
    if http.host:
        out["host"] = http.host
    if http.scheme:
        out["scheme"] = http.scheme
    if http.query:
        out["query"] = http.query
    if http.fragment:
        out["fragment"] = http.fragment
    if http.size:
        out["size"] = http.size  # -1 (unknown) is non-zero and shows
    if http.protocol:
        out["protocol"] = http.protocol
    if http.body:
        out["body"] = http.body
    if http.raw_body:
        out["rawBody"] = _b64(http.raw_body)
    return out


def _header_map(hm: base_pb2.HeaderMap) -> dict[str, Any]:
    if not hm.headers:
        return {}
    entries: list[dict[str, Any]] = []
    for hv in hm.headers:
        entry: dict[str, Any] = {}
        if hv.key:
            entry["key"] = hv.key
        if hv.value:
            entry["value"] = hv.value
        if hv.raw_value:
            entry["rawValue"] = _b64(hv.raw_value)
        entries.append(entry)
    return {"headers": entries}


def _metadata(md: base_pb2.Metadata) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if md.filter_metadata:
        out["filterMetadata"] = {ns: _struct(s) for ns, s in md.filter_metadata.items()}
    if md.typed_filter_metadata:
        out["typedFilterMetadata"] = {ns: _any(a) for ns, a in md.typed_filter_metadata.items()}
    return out


def _any(a: any_pb2.Any) -> dict[str, Any]:
    # Not unpacked: the plugin walks Any like any other message.
    out: dict[str, Any] = {}
    if a.type_url:
        out["typeUrl"] = a.type_url
    if a.value:
        out["value"] = _b64(a.value)
    return out


def _struct(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _value(v) for k, v in s.fields.items()}


def _value(v: struct_pb2.Value) -> Any:
    # Go's structpb AsInterface: null or an unset kind is nil; non-finite
    # numbers become the strings protojson would write.
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        n = v.number_value
        if math.isfinite(n):
            return n
        if math.isnan(n):
            return "NaN"
        return "Infinity" if n > 0 else "-Infinity"
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return _struct(v.struct_value)
    if kind == "list_value":
        return [_value(item) for item in v.list_value.values]
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
