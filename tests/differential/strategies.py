"""Hypothesis strategies for hostile-but-plausible requests: bodies of every media type with
the variations application parsers disagree on, framings and splits around Envoy's 8 KiB
body buffer, forged forwarding headers, repeated and odd headers, escaped paths and queries.

A `WireRequest` is everything the client controls; `wire_client` puts it on the wire."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

BUFFER_LIMIT: Final = 8192  # with_request_body.max_request_bytes of the shipped configurations
BOUNDARY: Final = "diffB0undary"


@dataclass(frozen=True)
class WireRequest:
    protocol: str  # "HTTP/1.1" or "HTTP/2"
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    framing: str  # "length" (content-length), "chunked" (HTTP/1.1 only) or "none"
    splits: tuple[int, ...] = ()  # where the body is cut into separate writes / DATA frames
    pause: float = 0.0  # between the pieces
    h2_scheme: str = "http"  # the :scheme an HTTP/2 client claims

    def all_headers(self, marker: str) -> list[tuple[str, str]]:
        from tests.differential.parsing_upstream import MARKER_HEADER

        return [*self.headers, (MARKER_HEADER, marker)]

    def body_pieces(self) -> list[bytes]:
        if self.framing == "none" and self.protocol == "HTTP/1.1":
            return []
        cuts = sorted({c for c in self.splits if 0 < c < len(self.body)})
        edges = [0, *cuts, len(self.body)]
        return [self.body[a:b] for a, b in itertools.pairwise(edges)] if self.body else []

    @property
    def sent_body(self) -> bytes:
        return b"".join(self.body_pieces())

    def describe(self) -> str:
        return (
            f"{self.protocol} {self.method} {self.target!r} framing={self.framing} splits={self.splits} "
            f"pause={self.pause} scheme={self.h2_scheme}\nheaders={list(self.headers)!r}\n"
            f"body ({len(self.body)} bytes)={self.body[:600]!r}{'...' if len(self.body) > 600 else ''}"
        )


# --- media types ---------------------------------------------------------------------------

JSON_TYPES: Final = (
    "application/json",
    "Application/JSON",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    'application/json; charset="utf-8"',
    "application/json; charset=latin-1",
    "application/json ; charset=utf-8",
    "application/json; foo=bar",
    "application/json;",
    "application/vnd.api+json",
    "application/problem+JSON",
    "text/json",
    "text/vnd.foo+json",
    "application/json-patch+json",
    "application/jsonx",
    "application/json, text/plain",
    "application/json; charset=utf-8; charset=latin-1",
    'application/json; x="a;b"',
    "application/json; charset",
    "application / json",
)
FORM_TYPES: Final = (
    "application/x-www-form-urlencoded",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/x-www-form-urlencoded; charset=utf-8",
    "application/x-www-form-urlencoded; charset=iso-8859-1",
    "application/x-www-form-urlencoded;charset=UTF-8",
    "application/x-url-encoded",
    "application/x-www-form-urlencoded, application/json",
    "application/x-www-form-urlencodedx",
)
OTHER_TYPES: Final = (
    "text/plain",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "application/xml",
    "",
    ";",
    "json",
    "application/",
)


def multipart_types(boundary: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        (
            f"multipart/form-data; boundary={boundary}",
            f"Multipart/Form-Data; boundary={boundary}",
            f'multipart/form-data; boundary="{boundary}"',
            f"multipart/form-data; BOUNDARY={boundary}",
            f"multipart/form-data;boundary={boundary}",
            f"multipart/form-data; boundary={boundary}; charset=utf-8",
            f"multipart/form-data; boundary={boundary}; boundary=other",
            f"multipart/form-data; boundary={boundary} ",
            f"multipart/form-data; boundary={boundary}, text/plain",
            f"multipart/mixed; boundary={boundary}",
            "multipart/form-data",
            f"multipart/form-data; boundary={boundary}x",
        )
    )


# --- bodies ---------------------------------------------------------------------------------

_KEY_TEXT: Final = st.text(alphabet=st.sampled_from("ab_-.é \"'\\;=&%+/"), min_size=0, max_size=6)
_JSON_SCALARS: Final = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES: Final = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEY_TEXT, inner, max_size=4),
    max_leaves=10,
)
_NUMBER_TEXTS: Final = (
    "1e400",
    "-0",
    "0.1",
    "1.0",
    "12345678901234567890123",
    "1E2",
    "0.30000000000000004",
    "1e-400",
    "9007199254740993",
    "01",
    "+1",
    ".5",
    "NaN",
    "Infinity",
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    value = draw(JSON_VALUES)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    # Half plain, so that allowed bodies are compared too; half the variations parsers disagree on.
    odd = st.sampled_from(("duplicate", "bom", "whitespace", "number", "trailing", "utf16", "empty"))
    variant = draw(st.just("plain") | odd)
    if variant == "duplicate":
        key = json.dumps(draw(_KEY_TEXT))
        text = f"{{{key}: {json.dumps(draw(JSON_VALUES))}, {key}: {json.dumps(draw(JSON_VALUES))}}}"
    elif variant == "bom":
        return "\ufeff".encode() + text.encode()
    elif variant == "whitespace":
        space = draw(st.sampled_from((" ", "\t", "\n", "\r", "\x0c", "\u00a0", "\u2028", "\x00", "\x0b")))
        text = f"{space}{text}{space}"
    elif variant == "number":
        text = f'{{"n": {draw(st.sampled_from(_NUMBER_TEXTS))}}}'
    elif variant == "trailing":
        text = text + draw(st.sampled_from((" null", "{}", ",", " x", "\n\n")))
    elif variant == "utf16":
        return text.encode("utf-16")
    elif variant == "empty":
        return b""
    return text.encode()


_FORM_TOKENS: Final = (
    *"ab01 é+=;&%?/#\\\"'",
    "%20",
    "%2B",
    "%26",
    "%3D",
    "%zz",
    "%FF",
    "%C3%A9",
    "%e9",
    "%00",
)
_FORM_TEXT: Final = st.lists(st.sampled_from(_FORM_TOKENS), max_size=6).map("".join)


@st.composite
def form_bodies(draw: st.DrawFn) -> bytes:
    pairs = draw(st.lists(st.tuples(_FORM_TEXT, _FORM_TEXT, st.booleans()), max_size=5))
    parts = [f"{k}={v}" if with_eq else k for k, v, with_eq in pairs]
    repeat = draw(st.integers(0, 3)) == 0
    if pairs and repeat:
        parts.append(parts[0])  # a repeated key
    separator = draw(st.sampled_from(("&", "&", "&", "&", "&", ";", "&&")))
    text = separator.join(parts)
    if draw(st.booleans()):
        text = draw(st.sampled_from(("&", "", "=", " "))) + text + draw(st.sampled_from(("&", "", "\n")))
    return text.encode("utf-8")


@dataclass(frozen=True)
class Part:
    name: str
    content: bytes
    filename: str | None = None
    content_type: str | None = None


_PART_NAMES: Final = st.sampled_from(("action", "a", "file", "b", "c")) | st.sampled_from(
    ("", "é", 'q"x', "a\\b", "a;b", "a b", "A", "action ")
)
_PART_CONTENT: Final = st.sampled_from(
    (b"read", b"delete", b"", b"x\r\ny", b'{"a":1}', b"--" + BOUNDARY.encode(), b"\xff\xfe", b"caf\xc3\xa9")
)
_MULTIPART_VARIANTS: Final = (
    "canonical",
    "lf",
    "cr_mixed",
    "space_after_boundary",
    "preamble",
    "epilogue",
    "repeated_name",
    "unquoted_name",
    "escaped_name",
    "name_star",
    "filename_star",
    "upper_disposition",
    "attachment",
    "extra_param",
    "repeated_header",
    "transfer_encoding",
    "no_close",
    "no_disposition",
    "empty_name",
    "header_folding",
    "json_part",
    "text_after_close",
)


def _disposition(part: Part) -> str:
    value = f'form-data; name="{part.name}"'
    if part.filename is not None:
        value += f'; filename="{part.filename}"'
    return value


def multipart_body(parts: list[Part], variant: str, boundary: str = BOUNDARY) -> bytes:
    eol = b"\n" if variant == "lf" else b"\r\n"
    delimiter = b"--" + boundary.encode()
    out = bytearray(b"preamble text\r\n" if variant == "preamble" else b"")
    for index, part in enumerate(parts):
        first = index == 0
        out += delimiter + (b" \t" if variant == "space_after_boundary" and first else b"") + eol
        disposition = _disposition(part)
        if first:
            disposition = {
                "repeated_name": disposition + '; name="other"',
                "unquoted_name": f"form-data; name={part.name or 'x'}",
                "escaped_name": f'form-data; name="{part.name}\\"x"',
                "name_star": f"form-data; name*=UTF-8''{part.name or 'x'}; name=\"plain\"",
                "filename_star": disposition + "; filename*=UTF-8''evil.txt",
                "upper_disposition": disposition.replace("form-data", "FORM-DATA"),
                "attachment": disposition.replace("form-data", "attachment"),
                "extra_param": disposition + '; size="3"',
                "empty_name": 'form-data; name=""',
            }.get(variant, disposition)
        headers = (
            [] if first and variant == "no_disposition" else [b"Content-Disposition: " + disposition.encode()]
        )
        if first and variant == "repeated_header":
            headers.append(b'Content-Disposition: form-data; name="shadow"')
        if first and variant == "header_folding":
            headers[-1:] = [headers[-1][: len(b"Content-Disposition: form-data;")], b' name="folded"']
        if part.content_type is not None:
            headers.append(b"Content-Type: " + part.content_type.encode())
        elif first and variant == "json_part":
            headers.append(b"Content-Type: application/json")
        if first and variant == "transfer_encoding":
            headers.append(b"Content-Transfer-Encoding: base64")
        line_end = b"\r" if variant == "cr_mixed" and first else eol
        out += line_end.join(headers) + eol + eol + part.content + eol
    if variant != "no_close":
        out += delimiter + b"--" + eol
    if variant == "epilogue":
        out += b"epilogue\r\n"
    if variant == "text_after_close":
        out += delimiter + eol + b'Content-Disposition: form-data; name="late"' + eol + eol + b"x" + eol
    return bytes(out)


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    parts = draw(
        st.lists(
            st.builds(
                Part,
                name=_PART_NAMES,
                content=_PART_CONTENT,
                filename=st.none() | st.sampled_from(("a.txt", "", "../x", 'q"x')),
                content_type=st.none()
                | st.sampled_from(("text/plain", "application/json", "application/octet-stream")),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return multipart_body(parts, draw(st.just("canonical") | st.sampled_from(_MULTIPART_VARIANTS)))


def _padded(body: bytes, kind: str, size: int) -> bytes:
    """The body grown (where its type allows) to about `size` bytes, to reach the buffer limit."""
    missing = size - len(body)
    if missing <= 0:
        return body
    if kind == "json":
        pad = b'{"pad":"' + b"p" * max(0, missing - 18) + b'","v":' + (body or b"0") + b"}"
    elif kind == "form":
        pad = b"pad=" + b"p" * max(0, missing - 5 - len(body)) + b"&" + body
    elif kind == "multipart":
        filler = Part("pad", b"p" * max(0, missing - 120 - len(body)))
        pad = multipart_body([filler], "canonical")[: -len(f"--{BOUNDARY}--\r\n")] + body
    else:
        pad = body + b"p" * missing
    return pad


# --- headers, paths, framing ------------------------------------------------------------------

_FORGED: Final = (
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-for", "6.6.6.6, 10.0.0.1"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "admin.internal"),
    ("x-real-ip", "10.0.0.1"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-envoy-internal", "true"),
    ("x-envoy-auth-partial-body", "false"),
    ("x-envoy-original-path", "/admin"),
    ("x-request-id", "forged-id"),
)
_ODD: Final = (
    ("x-user", "alice"),
    ("x-user", "mallory"),
    ("authorization", "Bearer a"),
    ("authorization", "Bearer b"),
    ("accept", "*/*"),
    ("user-agent", "differential"),
    ("cookie", "s=1"),
    ("cookie", "s=2"),
    ("x-empty", ""),
    ("x-spaces", "  padded  "),
    ("x-comma", "a, b"),
    ("x-latin1", "caf\udce9"),  # the raw byte 0xE9 on the wire (surrogateescape)
    ("x-utf8", "café"),
    ("x-replacement", "\ufffd"),
    ("x-tab", "a\tb"),
    ("X-Mixed-Case", "v"),
    ("content-type", "text/plain"),  # a second content type when the body has one
    ("content-encoding", "gzip"),
    ("expect", "100-continue"),
)
_PATHS: Final = (
    "/",
    "/a/b",
    "/a%2Fb",
    "/a/%2e%2e/b",
    "/a/../b",
    "//a//b",
    "/%61dmin",
    "/a%20b",
    "/a+b",
    "/caf%C3%A9",
    "/%FF",
    "/a;x=1/b",
    "/a%3Fb",
    "/a%23b",
    "/%00",
    "/a\udce9",
)
_QUERIES: Final = (
    "",
    "?",
    "?a=1",
    "?a=1&a=2",
    "?a=1;b=2",
    "?a=%zz",
    "?a=b+c",
    "?a=%2B",
    "?=x",
    "?a",
    "?&&a=1&",
    "?a=%FF",
    "?a=caf%C3%A9",
    "?a[]=1&a[]=2",
    "?a=1&A=2",
    "?a=%26b%3Dc",
    "?a=café",  # raw UTF-8 bytes in the query
    "?a=caf\udce9",  # a raw byte that is not UTF-8
)


def _size_targets() -> st.SearchStrategy[int]:
    near = st.integers(min_value=-3, max_value=3).map(lambda d: BUFFER_LIMIT + d)
    return near | st.sampled_from((BUFFER_LIMIT * 2, 100, 4000))


@st.composite
def wire_requests(draw: st.DrawFn, protocols: tuple[str, ...] = ("HTTP/1.1", "HTTP/2")) -> WireRequest:
    protocol = draw(st.sampled_from(protocols))
    kind = draw(st.sampled_from(("json", "form", "multipart", "other", "none")))
    body_kind = (
        kind if draw(st.integers(0, 9)) else draw(st.sampled_from(("json", "form", "multipart", "other")))
    )
    makers: dict[str, Callable[[], Any]] = {
        "json": lambda: draw(json_bodies()),
        "form": lambda: draw(form_bodies()),
        "multipart": lambda: draw(multipart_bodies()),
        "other": lambda: draw(
            st.sampled_from((b"hello", b"a=1", b'{"a":1}', b"\xff\xfe", b"\xef\xbf\xbd", b""))
        ),
        "none": lambda: b"",
    }
    body = makers[body_kind]()
    if draw(st.booleans()):
        body = _padded(body, body_kind, draw(_size_targets()))
    headers: list[tuple[str, str]] = []
    if kind != "none":
        content_type = draw(
            {
                "json": st.sampled_from(JSON_TYPES),
                "form": st.sampled_from(FORM_TYPES),
                "multipart": multipart_types(BOUNDARY),
                "other": st.sampled_from(OTHER_TYPES),
            }[kind]
        )
        headers.append(("content-type", content_type))
    headers += draw(st.lists(st.sampled_from(_FORGED + _ODD), max_size=3))
    headers = draw(st.permutations(headers))
    if protocol == "HTTP/2":
        framing = draw(st.sampled_from(("length", "none")))
    else:
        framing = draw(st.sampled_from(("length", "chunked", "none" if not body else "length")))
    splits = draw(
        st.lists(
            st.sampled_from((BUFFER_LIMIT - 1, BUFFER_LIMIT, BUFFER_LIMIT + 1, 1, 100))
            | st.integers(0, max(0, len(body))),
            max_size=3,
        )
    )
    return WireRequest(
        protocol=protocol,
        method=draw(st.sampled_from(("POST", "POST", "PUT", "PATCH", "GET", "DELETE"))),
        target=draw(st.sampled_from(_PATHS)) + draw(st.sampled_from(_QUERIES)),
        headers=tuple(headers),
        body=body,
        framing=framing,
        splits=tuple(splits),
        pause=draw(st.sampled_from((0.0, 0.0, 0.05))) if splits else 0.0,
        h2_scheme=draw(st.sampled_from(("http", "http", "https"))) if protocol == "HTTP/2" else "http",
    )
