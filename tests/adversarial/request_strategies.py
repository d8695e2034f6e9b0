"""Hypothesis strategies for hostile CheckRequests, and the oracle that says which of them
the sidecar must send to OPA.

A generated request is a template: the test stamps each copy with its own marker header
(so the fault OPA can tell which check it is answering), then it may be cut, bit-flipped or
padded on the wire. Parseable means what the sidecar itself does: the bytes are within
--max-request-bytes, decode as a CheckRequest, and `build_input` turns them into a document
without BadRequest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError
from hypothesis import strategies as st

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar.envoy.input import BadRequest, build_input, opa_request_body

MARKER_HEADER: Final = "x-adv-check"

# Text a protobuf string field can hold (no lone surrogates), any script.
_TEXT = st.characters(codec="utf-8")
_ASCII_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)

_ESCAPES: Final = [
    "%41", "%2F", "%2f", "%C3%A9", "%C3", "%FF", "%", "%4", "%zz", "%00", "+", "%2B", "%25",
    "..", ".", "", "%E2%82", "%F0%9F%98%80", "%ED%A0%80", "%C0%AF", "%u0041", "\u00e9", "/",
]  # fmt: skip
_clean_piece = st.text(st.characters(codec="utf-8", exclude_characters="%;?#"), max_size=8)
_piece = st.one_of(_clean_piece, st.text(_TEXT, max_size=8), st.sampled_from(_ESCAPES))
_segment = st.lists(_piece, max_size=3).map("".join)
_clean_segment = st.lists(_clean_piece, max_size=3).map("".join)


@st.composite
def paths(draw: st.DrawFn) -> str:
    """Raw `:path` values: escapes valid and not, dot segments, repeated and empty query keys."""
    prefix = draw(st.sampled_from(["/", "/", "/", "//", "", "*", "/./", "/../"]))
    segment = draw(st.sampled_from([_clean_segment, _clean_segment, _segment]))
    path = prefix + "/".join(draw(st.lists(segment, max_size=5)))
    if draw(st.booleans()):
        keys = draw(
            st.lists(st.one_of(st.sampled_from(["a", "id", "", "%61", "a+b", "="]), _segment), max_size=3)
        )
        pairs = draw(
            st.lists(
                st.tuples(st.sampled_from(keys) if keys else _segment, _segment, st.booleans()), max_size=8
            )
        )
        separator = draw(st.sampled_from(["&", "&", "&", "&&", ";", "&;"]))
        path += "?" + separator.join(f"{k}={v}" if with_value else k for k, v, with_value in pairs)
    if draw(st.integers(0, 9)) == 0:
        path += "#" + draw(_segment)
    return path


_HEADER_NAMES: Final = [
    "x-user", "authorization", "cookie", "x-forwarded-for", "accept", "user-agent", ":authority",
    "content-type", "content-length", "x-envoy-auth-partial-body", "transfer-encoding", "X-Upper",
]  # fmt: skip


def _huge(max_size: int) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from("xA%é\t "), st.integers(1024, max_size)).map(lambda t: t[0] * t[1])


def header_values(max_size: int) -> st.SearchStrategy[str]:
    return st.one_of(st.text(_TEXT, max_size=40), _huge(max_size), st.just(""))


_CONTENT_TYPES: Final = [
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/json",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=XyZ", "multipart/form-data",
    'multipart/form-data; boundary="a b"', "multipart/form-data; boundary*=utf-8''XyZ",
    "multipart/form-data; boundary=", "multipart/form-data; boundary=XyZ; boundary=Other",
    "text/plain", "application/grpc", "application/grpc+proto", "application/octet-stream", "",
]  # fmt: skip

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(_TEXT, max_size=10),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(_TEXT, max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_json_texts = st.one_of(
    _json_values.map(json.dumps),
    _json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.sampled_from(
        [
            '{"a": 1e400}',
            '{"a": 0.1}',
            '{"a": 1.0}',
            '{"a": 12345678901234567890123}',
            "[1, 2",
            '{"a": NaN}',
            '{"a": "\\ud800"}',
            '{"a": 1} x',
            '{"a": 1} null',
            '{"a":1,"a":2}',
            "",
            " ",
            "\ufeff{}",
            '{"a": 1e-400}',
            '{"a": -0}',
            '"just a string"',
            "1" * 5000,
        ]
    ),
    st.integers(1, 400).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 400).map(lambda n: '{"a":' * n + "1" + "}" * n),
)
_form_texts = paths().map(lambda p: p.partition("?")[2])


@st.composite
def multipart_texts(draw: st.DrawFn) -> str:
    boundary = draw(st.sampled_from(["XyZ", "XyZ", "Other", "a b"]))
    newline = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        disposition = draw(
            st.sampled_from(
                [
                    'form-data; name="field"',
                    'form-data; name="field"; filename="a.txt"',
                    "form-data; name=plain",
                    "form-data; name*=utf-8''x; name=\"y\"",
                    "attachment",
                    "",
                ]
            )
        )
        headers = [f"Content-Disposition: {disposition}"]
        if draw(st.booleans()):
            headers.append(
                draw(st.sampled_from(["Content-Type: application/json", "Content-Type: text/plain"]))
            )
        if draw(st.integers(0, 5)) == 0:
            headers.append("Content-Transfer-Encoding: quoted-printable")
        payload = draw(st.one_of(_json_texts, st.text(_TEXT, max_size=20)))
        parts.append(newline.join([f"--{boundary}", *headers, "", payload]))
    ending = draw(st.sampled_from([f"--{boundary}--", f"--{boundary}--{newline}", f"--{boundary}", ""]))
    preamble = draw(st.sampled_from(["", "preamble" + newline]))
    return preamble + newline.join([*parts, ending])


@dataclass(frozen=True)
class BodySpec:
    content_type: str | None
    payload: str | bytes
    as_raw: bool  # raw_body (bytes) rather than body (string)
    partial: str | None  # x-envoy-auth-partial-body
    content_length: str | None


_JSON_TYPES: Final = ["application/json", "application/json; charset=utf-8", "application/json-patch+json"]
_MULTIPART_TYPES: Final = [t for t in _CONTENT_TYPES if t.startswith("multipart/")]


@st.composite
def bodies(draw: st.DrawFn) -> BodySpec:
    """Mostly a payload that matches its content type (so the body parsers run), sometimes not."""
    family = draw(st.sampled_from(["json", "json", "form", "multipart", "multipart", "other"]))
    payload: str | bytes
    if family == "json":
        ctype: str | None = draw(st.sampled_from(_JSON_TYPES))
        payload = draw(_json_texts)
    elif family == "form":
        ctype = "application/x-www-form-urlencoded"
        payload = draw(_form_texts)
    elif family == "multipart":
        ctype = draw(st.sampled_from([*_MULTIPART_TYPES, "multipart/form-data; boundary=XyZ"]))
        payload = draw(multipart_texts())
    else:
        ctype = draw(st.one_of(st.sampled_from(_CONTENT_TYPES), st.text(_TEXT, max_size=20), st.none()))
        payload = draw(st.one_of(st.text(_TEXT, max_size=30), st.binary(max_size=40)))
    if draw(st.integers(0, 6)) == 0:
        payload = draw(st.one_of(_json_texts, multipart_texts(), st.binary(max_size=40)))
    as_raw = isinstance(payload, bytes) or draw(st.booleans())
    size = len(payload if isinstance(payload, bytes) else payload.encode())
    partial = draw(st.sampled_from([None, None, "false", "false", "true", "TRUE", ""]))
    content_length = draw(
        st.sampled_from(
            [str(size)] * 4
            + [str(size + 100), str(max(size - 1, 0)), None, "abc", "-1", "99999999999999999999"]
        )
    )
    return BodySpec(ctype, payload, as_raw, partial, content_length)


@dataclass(frozen=True)
class Mutation:
    """Damage done to the serialized request: cut it, flip a byte, or append bytes."""

    kind: str  # "cut" | "flip" | "append"
    where: float  # position as a share of the length
    data: bytes = b""

    def apply(self, wire: bytes) -> bytes:
        at = int(self.where * len(wire))
        if self.kind == "cut":
            return wire[:at]
        if self.kind == "flip" and wire:
            at = min(at, len(wire) - 1)
            return wire[:at] + bytes([wire[at] ^ (self.data[0] if self.data else 0xFF)]) + wire[at + 1 :]
        return wire + self.data


@dataclass(frozen=True)
class RequestTemplate:
    """A CheckRequest (or raw bytes) to send, stamped with a marker at send time."""

    request: CheckRequest | None
    raw: bytes = b""
    mutation: Mutation | None = None

    def wire(self, marker: str) -> bytes:
        if self.request is None:
            return self.raw
        stamped = CheckRequest()
        stamped.CopyFrom(self.request)
        if stamped.attributes.request.HasField("http"):
            stamped.attributes.request.http.headers[MARKER_HEADER] = marker
        data = stamped.SerializeToString()
        return self.mutation.apply(data) if self.mutation is not None else data


_SHAPES: Final = [
    "full", "full", "full", "full", "no-attributes", "no-request", "no-http", "no-headers", "no-peers",
    "empty-http",
]  # fmt: skip


@st.composite
def check_requests(draw: st.DrawFn, huge_header_bytes: int = 96 * 1024) -> RequestTemplate:
    if draw(st.integers(0, 19)) == 0:
        return RequestTemplate(None, raw=draw(st.binary(max_size=200)))
    shape = draw(st.sampled_from(_SHAPES))
    request = CheckRequest()
    if shape == "no-attributes":
        return RequestTemplate(request)
    attrs = request.attributes
    if shape != "no-peers":
        attrs.source.address.socket_address.address = draw(
            st.sampled_from(["10.0.0.7", "::1", "", "not-an-ip"])
        )
        attrs.source.address.socket_address.port_value = draw(st.integers(0, 65535))
        attrs.source.principal = draw(st.one_of(st.just(""), st.text(_TEXT, max_size=30)))
        attrs.destination.address.pipe.path = draw(st.text(_TEXT, max_size=10))
    if draw(st.booleans()):
        for key, value in draw(
            st.dictionaries(st.text(_TEXT, max_size=5), st.text(_TEXT, max_size=5), max_size=3)
        ).items():
            attrs.context_extensions[key] = value
    if draw(st.integers(0, 3)) == 0:
        metadata: dict[str, Any] = draw(
            st.dictionaries(
                st.text(_TEXT, max_size=5),
                st.one_of(_json_values, st.floats(), st.sampled_from([float("inf"), float("nan")])),
                max_size=3,
            )
        )
        attrs.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update(metadata)
    if draw(st.integers(0, 5)) == 0:
        attrs.tls_session.sni = draw(st.text(_TEXT, max_size=10))
    if shape == "no-request":
        return RequestTemplate(request)
    attrs.request.time.seconds = draw(st.integers(0, 2**40))
    if shape == "no-http":
        return RequestTemplate(request)
    http = attrs.request.http
    if shape == "empty-http":
        http.SetInParent()
        return RequestTemplate(request, mutation=_maybe_damaged(draw))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "BREW", "get", ""]))
    path = draw(paths())
    http.method, http.path = method, path
    http.host = draw(st.sampled_from(["app.example", "", "UPPER.example:8080", "[::1]:80"]))
    http.scheme = draw(st.sampled_from(["http", "https", ""]))
    http.protocol = draw(st.sampled_from(["HTTP/1.1", "HTTP/2", ""]))
    http.id = str(draw(st.integers(0, 2**64)))
    headers: dict[str, str] = {}
    if shape != "no-headers":
        headers = {":method": method, ":path": path}
        names = st.one_of(st.sampled_from(_HEADER_NAMES), _ASCII_TOKEN)
        headers.update(draw(st.dictionaries(names, header_values(huge_header_bytes), max_size=6)))
        if draw(st.sampled_from([True, True, True, False])):
            body = draw(bodies())
            _set_body(http, headers, body)
    for name, value in headers.items():
        http.headers[name] = value
    if draw(st.integers(0, 4)) == 0:
        # Envoy's other encoding of headers: a list, where a name may repeat and a value
        # may be bytes that are not UTF-8.
        for name, raw in draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["x-dup", "x-dup", "cookie", "content-type"]), st.binary(max_size=12)
                ),
                max_size=4,
            )
        ):
            entry = http.header_map.headers.add()
            entry.key = name
            entry.raw_value = raw
    return RequestTemplate(request, mutation=_maybe_damaged(draw))


def _set_body(http: Any, headers: dict[str, str], body: BodySpec) -> None:
    if body.content_type is not None:
        headers["content-type"] = body.content_type
    if body.partial is not None:
        headers["x-envoy-auth-partial-body"] = body.partial
    if body.content_length is not None:
        headers["content-length"] = body.content_length
    payload = body.payload
    if body.as_raw:
        http.raw_body = payload if isinstance(payload, bytes) else payload.encode()
    else:
        assert isinstance(payload, str)
        http.body = payload
    http.size = len(http.raw_body or http.body.encode())


_mutations = st.builds(
    Mutation,
    st.sampled_from(["cut", "flip", "append"]),
    st.floats(0, 1),
    st.binary(min_size=1, max_size=8),
)
# One request in twelve is damaged on the wire. (Not `one_of` with repeated `none()`:
# hypothesis merges equal branches.)
_damaged = st.sampled_from(range(12)).map(lambda i: i == 11)


def _maybe_damaged(draw: st.DrawFn) -> Mutation | None:
    return draw(_mutations) if draw(_damaged) else None


@dataclass(frozen=True)
class Expectation:
    parseable: bool  # the sidecar must ask OPA exactly once
    marker: str | None  # the marker OPA will see in the input, if any


def expectation(wire: bytes, max_request_bytes: int) -> Expectation:
    """What the sidecar must do with these bytes, by the definition of parseable."""
    if len(wire) > max_request_bytes:
        return Expectation(False, None)
    try:
        request = CheckRequest.FromString(wire)
    except DecodeError:
        return Expectation(False, None)
    headers = request.attributes.request.http.headers
    marker = headers.get(MARKER_HEADER)
    try:
        opa_request_body(build_input(request))
    except BadRequest:
        return Expectation(False, None)
    return Expectation(True, marker)
