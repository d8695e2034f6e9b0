"""The OPA-Envoy plugin as its documentation and source describe it (v1.19.1-envoy; the
project's reference notes on it), for machines that cannot build the plugin itself.

It builds the plugin's input document from a CheckRequest, asks the real OPA for the
decision, and answers as the plugin would. It covers what the sidecar accepts: for a
request the sidecar refuses, only the fact that the plugin takes it matters, not exactly
what it makes of it. When the plugin can be built, the tests hold this model to it.
"""

from __future__ import annotations

import asyncio
import base64
import email.message
import http
import json
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar._proto.envoy.type.v3.http_status_pb2 import StatusCode
from tests.fixtures.opa import OpaProcess
from tests.peer.outcome import ECHO_HEADER, Header, Outcome

VERSION = {"ext_authz": "v3", "encoding": "protojson"}
# A deny status must be one Go names and one Envoy's StatusCode enum holds.
DENY_STATUSES = frozenset(s.value for s in http.HTTPStatus) & frozenset(StatusCode.values())


class ParseError(ValueError):
    """The plugin answers these with its own 400 deny."""


class ResultError(ValueError):
    """The plugin answers these with a gRPC error (UNKNOWN)."""


# -- the input document -----------------------------------------------------------------------


def _field_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return protomap(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return int(value)
    return value


def protomap(message: Message) -> dict[str, Any]:
    """Set fields only, under their JSON names; a Struct as plain JSON, a Timestamp as its
    seconds and nanos, enums as numbers, bytes as base64."""
    if message.DESCRIPTOR.full_name == "google.protobuf.Struct":
        return dict(MessageToDict(message))
    rendered: dict[str, Any] = {}
    for field, value in message.ListFields():
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            rendered[field.json_name] = {str(k): _field_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            rendered[field.json_name] = [_field_value(field, v) for v in value]
        else:
            rendered[field.json_name] = _field_value(field, value)
    return rendered


def _unescape(text: str, *, plus_is_space: bool) -> str:
    """Go's url.PathUnescape / QueryUnescape: %XX decoded, a bad escape is an error."""
    raw = text.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte == ord("%"):
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or any(c not in b"0123456789abcdefABCDEF" for c in pair):
                raise ParseError(f"invalid URL escape {raw[i : i + 3]!r}")
            out.append(int(pair, 16))
            i += 3
            continue
        out.append(ord(" ") if plus_is_space and byte == ord("+") else byte)
        i += 1
    return out.decode(errors="replace")


def parse_query(query: str) -> dict[str, list[str]]:
    """Go's url.ParseQuery: every value of every name, in order; any error fails it all."""
    parsed: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        if ";" in pair:
            raise ParseError("invalid semicolon separator in query")
        name, _, value = pair.partition("=")
        parsed.setdefault(_unescape(name, plus_is_space=True), []).append(
            _unescape(value, plus_is_space=True)
        )
    return parsed


def parse_path(path: str) -> tuple[list[str], dict[str, list[str]]]:
    raw_path, _, raw_query = path.partition("?")
    return _unescape(raw_path, plus_is_space=False).lstrip("/").split("/"), parse_query(raw_query)


def _json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ParseError(f"invalid JSON constant {constant}")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as exc:
        raise ParseError(str(exc)) from None


def _truncated(headers: dict[str, str], payload: bytes) -> bool:
    length = headers.get("content-length")
    if length is None:
        return False
    try:
        announced = int(length, 10)
    except ValueError:
        raise ParseError("content-length is not a number") from None
    return announced != -1 and announced > len(payload)


def _media_params(value: str) -> tuple[str, dict[str, str]]:
    message = email.message.Message()
    message["content-type"] = value
    media_type = message.get_content_type()
    return media_type, {k.lower(): str(v) for k, v in (message.get_params() or [])[1:]}


def _form_name(disposition: str) -> str:
    """Go's Part.FormName: the name of a `form-data` disposition, else empty."""
    message = email.message.Message()
    message["content-disposition"] = disposition
    if message.get_content_disposition() != "form-data":
        return ""
    name = message.get_param("name", header="content-disposition")
    return name if isinstance(name, str) else ""


def _multipart(payload: str, content_type: str) -> dict[str, list[Any]] | None:
    boundary = _media_params(content_type)[1].get("boundary")
    if boundary is None:
        return None
    values: dict[str, list[Any]] = {}
    chunks = payload.split(f"--{boundary}")
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            return values
        head, blank, content = chunk.removeprefix("\r\n").partition("\r\n\r\n")
        if not blank:
            raise ParseError("multipart: malformed part")
        headers = {}
        for line in head.split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        name = _form_name(headers.get("content-disposition", ""))
        if not name:
            continue
        content = content.removesuffix("\r\n")
        value = _json(content) if "application/json" in headers.get("content-type", "") else content
        values.setdefault(name, []).append(value)
    raise ParseError("multipart: NextPart: EOF")


def parse_body(headers: dict[str, str], body: str, raw_body: bytes) -> tuple[Any, bool]:
    """(parsed_body, truncated_body) as the plugin decides them."""
    if headers.get("x-envoy-auth-partial-body") == "true":
        return None, True
    content_type = headers.get("content-type")
    if content_type is None:
        return None, False
    payload = body.encode() or raw_body
    parsers: list[tuple[str, Callable[[str], Any]]] = [
        ("application/json", _json),
        ("application/grpc", lambda _: None),  # no proto descriptor configured
        ("application/x-www-form-urlencoded", parse_query),
        ("multipart/form-data", lambda text: _multipart(text, content_type)),
    ]
    for media, parse in parsers:
        if media in content_type:
            if not payload or media == "application/grpc":
                return None, False
            if _truncated(headers, payload):
                return None, True
            return parse(payload.decode(errors="replace")), False
    return None, False


def plugin_input(request: CheckRequest) -> dict[str, Any]:
    document = protomap(request)
    document["version"] = VERSION
    http_request = request.attributes.request.http
    document["parsed_path"], document["parsed_query"] = parse_path(http_request.path)
    headers = dict(http_request.headers)
    document["parsed_body"], document["truncated_body"] = parse_body(
        headers, http_request.body, http_request.raw_body
    )
    if request.attributes.source.principal:
        document["source_principal"] = request.attributes.source.principal
    return document


# -- the answer -------------------------------------------------------------------------------


def _header_values(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ResultError(f"type assertion error for header '{name}'")


def _headers(decision: dict[str, Any], key: str, how: str) -> tuple[Header, ...]:
    value = decision.get(key, {})
    objects = value if isinstance(value, list) else [value]
    if not all(isinstance(o, dict) for o in objects):
        raise ResultError(f"type assertion error, expected {key} to be of type 'object'")
    return tuple(sorted((k, v, how) for o in objects for k, raw in o.items() for v in _header_values(k, raw)))


def _strings(decision: dict[str, Any], key: str) -> tuple[str, ...]:
    value = decision.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ResultError(f"type assertion error, expected {key} to be of type '[]string'")
    return tuple(sorted(value))


def plugin_answer(result: Any) -> Outcome:
    """The plugin's CheckResponse for a defined decision, as an Outcome."""
    if isinstance(result, bool):
        return Outcome("allow") if result else Outcome("deny", 403)
    if not isinstance(result, dict):
        raise ResultError("illegal value for policy evaluation result")
    allowed = result.get("allowed")
    if not isinstance(allowed, bool):
        raise ResultError('missing or non-boolean "allowed"')
    headers = _headers(result, "headers", "set")
    metadata = result.get("dynamic_metadata", {})
    if not isinstance(metadata, dict):
        raise ResultError("type assertion error, expected dynamic_metadata to be of type 'object'")
    rendered = _as_struct({k: v for k, v in metadata.items() if k != "decision_id"})
    if allowed:
        to_set = _headers(result, "query_parameters_to_set", "")
        return Outcome(
            "allow",
            headers=tuple(h for h in headers if h[0] != ECHO_HEADER),
            headers_to_remove=_strings(result, "request_headers_to_remove"),
            response_headers_to_add=_headers(result, "response_headers_to_add", "append"),
            query_parameters_to_set=tuple((k, v) for k, v, _ in to_set),
            query_parameters_to_remove=_strings(result, "query_parameters_to_remove"),
            metadata=rendered,
            echoed_input=_echoed(result),
        )
    status = result.get("http_status", 403)
    if isinstance(status, bool) or not isinstance(status, int | float) or status not in DENY_STATUSES:
        raise ResultError(f"invalid HTTP status code {status}")
    body = result.get("body", "")
    if not isinstance(body, str):
        raise ResultError("type assertion error, expected body to be of type 'string'")
    return Outcome("deny", int(status), headers, body=body, metadata=rendered)


def _as_struct(metadata: dict[str, Any]) -> str:
    """Dynamic metadata travels as a protobuf Struct, whose numbers are all doubles."""
    struct = Struct()
    struct.update(metadata)
    return json.dumps(MessageToDict(struct), sort_keys=True)


def _echoed(result: dict[str, Any]) -> Any:
    headers = result.get("headers")
    echoed = headers.get(ECHO_HEADER) if isinstance(headers, dict) else None
    return json.loads(base64.b64decode(echoed)) if isinstance(echoed, str) else None


class DocumentedPlugin:
    """Answers CheckRequests as the plugin would, evaluating on `opa` at `decision_path`."""

    def __init__(self, opa: OpaProcess, decision_path: str) -> None:
        self.opa = opa
        self.decision_path = decision_path

    async def check(self, request: CheckRequest) -> Outcome:
        return await asyncio.to_thread(self._check, request)

    def _check(self, request: CheckRequest) -> Outcome:
        try:
            document = plugin_input(request)
        except ParseError as exc:
            return Outcome("deny", 400, body=f"request_parse_error: {exc}")
        reply = self.opa.request("POST", f"/v1/data/{self.decision_path}", json.dumps({"input": document}))
        answer = reply.json()
        if reply.status != 200 or "result" not in answer:
            return Outcome("error", error="UNKNOWN")
        try:
            return plugin_answer(answer["result"])
        except ResultError:
            return Outcome("error", error="UNKNOWN")
