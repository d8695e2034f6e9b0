"""CheckRequest -> the OPA input document, as the OPA-Envoy plugin builds it.

A policy written for OPA-Envoy must run unchanged, so this follows the plugin's
``envoyauth/request.go`` and its post-#631 ``protomap`` rendering of the
CheckRequest (see ``reference/opa-envoy-compat.md`` section 2):

- ``attributes``: protomap's JSON rendering of the AttributeContext
  (module ``attributes``);
- ``parsed_path`` / ``parsed_query``: Go ``url.PathUnescape`` and
  ``url.ParseQuery`` semantics (module ``path_and_query``);
- ``parsed_body`` / ``truncated_body``: JSON, form and multipart bodies
  (modules ``body``, ``media_type`` and ``multipart``), and gRPC messages
  with a descriptor set (``grpc_body``).

The document must describe the request the application receives. Where it
cannot do so exactly (bytes that are not UTF-8, JSON numbers a float cannot
hold exactly, a repeated parameter, a body parsers read differently), the
request is refused with ``BadRequest`` instead of guessed at: a guess could
turn a deny into an allow.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from sidecar._proto.envoy.service.auth.v3 import external_auth_pb2
from sidecar.envoy.attributes import render_attributes
from sidecar.envoy.bad_request import BadRequest
from sidecar.envoy.body import (
    DEFAULT_ENVOY_BODY_LIMIT,
    MAX_BODY_JSON_DEPTH,
    parse_request_body,
    request_body_bytes,
)
from sidecar.envoy.grpc_body import GrpcMethods
from sidecar.envoy.headers import request_headers
from sidecar.envoy.path_and_query import parse_path_and_query

__all__ = ["DEFAULT_ENVOY_BODY_LIMIT", "MAX_BODY_JSON_DEPTH", "BadRequest", "build_input", "opa_request_body"]


def build_input(
    request: external_auth_pb2.CheckRequest,
    *,
    parse_body: bool = True,
    envoy_body_limit: int = DEFAULT_ENVOY_BODY_LIMIT,
    grpc_methods: GrpcMethods | None = None,
) -> dict[str, Any]:
    """The OPA input document for ``request``; raises ``BadRequest`` (only)
    when the path, query, headers or body cannot be described exactly.
    ``parse_body=False`` is the plugin's ``skip-request-body-parse``: no
    ``parsed_body``/``truncated_body``. ``envoy_body_limit`` is Envoy's
    with_request_body.max_request_bytes. ``grpc_methods`` (``--proto-descriptor``)
    decodes gRPC request messages."""
    doc: dict[str, Any] = {}
    attrs = request.attributes
    http = attrs.request.http
    headers = request_headers(http)
    data = request_body_bytes(http.body, http.raw_body)
    # protomap renders a message field only when it is present, even if empty.
    if request.HasField("attributes"):
        # Raw headers (encode_raw_headers) also appear where policies read headers.
        doc["attributes"] = render_attributes(attrs, headers or None)
        if data and not http.body:
            _add_text_body(doc["attributes"], data)
    parsed_path, parsed_query = parse_path_and_query(http.path)
    doc["parsed_path"] = parsed_path
    doc["parsed_query"] = parsed_query
    if parse_body:
        doc["parsed_body"], doc["truncated_body"] = parse_request_body(
            headers, data, envoy_limit=envoy_body_limit, path=http.path, grpc_methods=grpc_methods
        )
    principal = attrs.source.principal
    if principal:
        doc["source_principal"] = principal
    doc["version"] = {"ext_authz": "v3", "encoding": "protojson"}
    return doc


def _add_text_body(attributes: dict[str, Any], data: bytes) -> None:
    """A body sent as bytes (pack_as_bytes) also appears as ``body`` when it
    is UTF-8 text, so a policy reads it where it would read a string body;
    ``rawBody`` keeps the exact bytes either way."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    attributes["request"]["http"]["body"] = text


def opa_request_body(input_doc: dict[str, Any]) -> bytes:
    """``{"input": ...}`` for OPA's Data API. orjson is the fast path; it
    refuses integers beyond 64 bits (exact big numbers from a JSON body), so
    those documents go through the stdlib encoder, which keeps them exact."""
    try:
        return b'{"input":' + orjson.dumps(input_doc) + b"}"
    except orjson.JSONEncodeError:
        text = json.dumps(input_doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return b'{"input":' + text.encode("utf-8") + b"}"
