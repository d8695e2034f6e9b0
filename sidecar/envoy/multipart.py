"""multipart/form-data bodies, after Go's mime and mime/multipart.

Written out rather than built on the stdlib email parser: email is lenient
where Go errors (it records defects and carries on, accepts bare CR line
ends, parses nested multipart and message parts, decodes base64), and every
such difference is a body the policy would see differently from OPA-Envoy.

This module splits the body into named parts; what a part's content becomes
in ``parsed_body`` (text or JSON) is the body module's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from sidecar.envoy.bad_request import BadRequest

__all__ = ["MultipartReader", "form_boundary"]

_TSPECIALS: Final = frozenset('()<>@,;:\\"/[]?=')
_TOKEN_CHARS: Final = frozenset(chr(c) for c in range(0x21, 0x7F)) - _TSPECIALS
# Go's unicode.IsSpace, which mime trims with.
_GO_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_TOKEN: Final = re.compile("[" + re.escape("".join(sorted(_TOKEN_CHARS))) + "]+")
_TSPECIALS_CLASS: Final = "[" + re.escape("".join(sorted(_TSPECIALS))) + "]"
_SPACES: Final = "[" + re.escape(_GO_SPACE) + "]*"
# One ";key=value" parameter with the whitespace Go skips around each piece.
# A quoted value as Go reads it: a backslash escapes a tspecial and is kept
# as itself before anything else; CR or LF ends it unsuccessfully. Atomic, so
# an escaped quote is never re-read as the closing one.
_PARAM: Final = re.compile(
    rf"{_SPACES};{_SPACES}({_TOKEN.pattern}){_SPACES}={_SPACES}"
    rf'(?:({_TOKEN.pattern})|"((?>\\{_TSPECIALS_CLASS}|[^"\\\r\n]|\\)*+)")'
)
_QUOTED_PAIR: Final = re.compile(r"\\(" + _TSPECIALS_CLASS + ")")
# textproto header names: RFC 7230 tchar, plus a space Go tolerates (go.dev/issue/34540).
_BAD_HEADER_NAME: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z ]")
# Header value bytes Go's textproto accepts: HTAB, SP..~ and obs-text.
_BAD_HEADER_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class _MediaTypeError(Exception):
    """mime.ParseMediaType failed."""


def _token_end(v: str, i: int) -> int:
    m = _TOKEN.match(v, i)
    return i if m is None else m.end()


def _is_media_type(mediatype: str) -> bool:
    """mime's checkMediaTypeDisposition: a token, or token/token."""
    end = _token_end(mediatype, 0)
    if end == 0:
        return False
    if end == len(mediatype):
        return True
    if mediatype[end] != "/":
        return False
    sub_end = _token_end(mediatype, end + 1)
    return sub_end > end + 1 and sub_end == len(mediatype)


def _parse_media_type(v: str, wanted: str) -> tuple[str, str | None]:
    """mime.ParseMediaType(v): the lower-cased media type and the parameter
    ``wanted`` (None when absent). RFC 2231 forms of ``wanted`` are not
    decoded here and are refused (BadRequest), so a value is never misread.
    Walks by index: slicing the rest at each parameter would be quadratic."""
    semicolon = v.find(";")
    base_end = len(v) if semicolon == -1 else semicolon
    mediatype = v[:base_end].lower().strip(_GO_SPACE)
    if not _is_media_type(mediatype):
        raise _MediaTypeError
    params: dict[str, str] = {}
    i = base_end
    while i < len(v):
        m = _PARAM.match(v, i)
        if m is None:
            rest = v[i:].strip(_GO_SPACE)
            if rest in ("", ";"):
                break  # trailing space or a trailing semicolon is allowed
            raise _MediaTypeError
        key, token, quoted = m.groups()
        key = key.lower()
        value = token
        if value is None:
            value = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
        if params.get(key, value) != value:
            raise _MediaTypeError  # a repeated parameter must repeat its value
        params[key] = value
        i = m.end()
    if any(k.partition("*")[0] == wanted for k in params if "*" in k):
        raise BadRequest(f"unsupported RFC 2231 {wanted} parameter in multipart body")
    return mediatype, params.get(wanted)


def form_boundary(ctype: str) -> bytes | None:
    """The boundary parameter of a multipart content-type; None when it has
    none (the body is then not parsed)."""
    try:
        _, boundary = _parse_media_type(ctype, "boundary")
    except _MediaTypeError:
        raise BadRequest("malformed content-type") from None
    if boundary is None:
        return None
    if not boundary:
        raise BadRequest("empty multipart boundary")
    return boundary.encode("utf-8")


class MultipartReader:
    """Go's multipart.Reader over a complete body: NextPart and each part's
    body, including its tolerance of LF-only line ends and of an empty body
    right after the headers. Any error is a BadRequest."""

    def __init__(self, data: bytes, boundary: bytes) -> None:
        self.data = data
        self.pos = 0
        self.nl = b"\r\n"
        self.dash_boundary = b"--" + boundary
        self.dash_boundary_dash = self.dash_boundary + b"--"
        self.nl_dash_boundary = self.nl + self.dash_boundary
        self.parts_read = 0

    def form_parts(self) -> Iterator[tuple[str, bytes, bytes]]:
        """(form name, content-type, content) of each part with a form name,
        in order; parts without one are skipped, as Go's ReadForm skips them."""
        while self._next_part():
            headers = self._headers()
            body = self._body()
            name = _form_name(headers.get(b"content-disposition", b""))
            if not name:
                continue
            if headers.get(b"content-transfer-encoding", b"").lower() == b"quoted-printable":
                # Go decodes it transparently; its decoder's error rules are
                # not reproduced here, so such parts are refused.
                raise BadRequest("quoted-printable multipart part")
            yield name, headers.get(b"content-type", b""), body

    def _line(self) -> tuple[bytes, bool]:
        """The next line with its line end, and whether the data ended first."""
        end = self.data.find(b"\n", self.pos)
        if end == -1:
            line = self.data[self.pos :]
            self.pos = len(self.data)
            return line, True
        line = self.data[self.pos : end + 1]
        self.pos = end + 1
        return line, False

    def _is_delimiter(self, line: bytes) -> bool:
        if not line.startswith(self.dash_boundary):
            return False
        rest = line[len(self.dash_boundary) :].lstrip(b" \t")
        if self.parts_read == 0 and rest == b"\n":
            # LF-only line ends: a violation of the spec that Go accepts.
            self.nl = b"\n"
            self.nl_dash_boundary = b"\n" + self.dash_boundary
        return rest == self.nl

    def _is_final(self, line: bytes) -> bool:
        if not line.startswith(self.dash_boundary_dash):
            return False
        rest = line[len(self.dash_boundary_dash) :].lstrip(b" \t")
        return not rest or rest == self.nl

    def _next_part(self) -> bool:
        expect_new_part = False
        while True:
            line, eof = self._line()
            if eof:
                if self._is_final(line):
                    return False
                raise BadRequest("multipart body ends without its closing boundary")
            if self._is_delimiter(line):
                self.parts_read += 1
                return True
            if self._is_final(line):
                return False
            if expect_new_part:
                raise BadRequest("malformed multipart body")
            if self.parts_read == 0:
                # Preamble: only a line starting with the boundary can end it.
                self._skip_to_boundary_line()
                continue
            if line == self.nl:
                expect_new_part = True
                continue
            raise BadRequest("malformed multipart body")

    def _skip_to_boundary_line(self) -> None:
        data = self.data
        i = data.find(self.dash_boundary, self.pos)
        while i > self.pos and data[i - 1 : i] != b"\n":
            i = data.find(self.dash_boundary, i + 1)
        self.pos = len(data) if i == -1 else i

    def _headers(self) -> dict[bytes, bytes]:
        """textproto.ReadMIMEHeader: names lower-cased, first value kept."""
        headers: dict[bytes, bytes] = {}
        if self.data[self.pos : self.pos + 1] in (b" ", b"\t"):
            raise BadRequest("malformed multipart part header")
        while True:
            line = self._header_line()
            if not line:
                return headers
            if b":" not in line:
                raise BadRequest("malformed multipart part header")
            # Continuation lines are joined with one space.
            if self.data[self.pos : self.pos + 1] in (b" ", b"\t"):
                pieces = [line]
                while self.data[self.pos : self.pos + 1] in (b" ", b"\t"):
                    pieces.append(self._header_line())
                line = b" ".join(pieces)
            name, _, value = line.partition(b":")
            if not name or _BAD_HEADER_NAME.search(name) or _BAD_HEADER_VALUE.search(value):
                raise BadRequest("malformed multipart part header")
            if b" " in name:
                continue  # Go keeps it uncanonicalised: no lookup ever finds it
            headers.setdefault(name.lower(), value.lstrip(b" \t"))

    def _header_line(self) -> bytes:
        line, eof = self._line()
        if eof:
            # Go's NextPart reports this as the end of the form and the
            # plugin keeps the parts before it; a cut-off part is refused here.
            raise BadRequest("multipart part headers are not terminated")
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        return line.strip(b" \t")

    def _body(self) -> bytes:
        start = self.pos
        data = self.data
        search_from = start
        if data.startswith(self.dash_boundary, start):
            # At the start of a body the delimiter may follow the headers
            # directly, without a preceding line end.
            match = self._match_after(start + len(self.dash_boundary))
            if match:
                return b""
            search_from = start + len(self.dash_boundary)
        i = data.find(self.nl_dash_boundary, search_from)
        while i != -1 and not self._match_after(i + len(self.nl_dash_boundary)):
            i = data.find(self.nl_dash_boundary, i + len(self.nl_dash_boundary))
        if i == -1:
            raise BadRequest("multipart part is not terminated by a boundary")
        self.pos = i
        return data[start:i]

    def _match_after(self, j: int) -> bool:
        """Whether a boundary prefix ending at ``j`` is a boundary."""
        data = self.data
        if j >= len(data):
            return True
        c = data[j : j + 1]
        if c in (b" ", b"\t", b"\r", b"\n"):
            return True
        return c == b"-" and data[j + 1 : j + 2] == b"-"


def _form_name(disposition: bytes) -> str:
    """Part.FormName: the name parameter of a form-data disposition, else ""
    (an unparseable disposition also gives "", as in Go)."""
    # Bytes that are not UTF-8 become lone surrogates: never token characters
    # (as in Go), and detectable if they end up in the name.
    try:
        kind, name = _parse_media_type(disposition.decode("utf-8", "surrogateescape"), "name")
    except _MediaTypeError:
        return ""
    if kind != "form-data" or not name:
        return ""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # Go keeps the bytes; refused for the reason given in path_and_query._unescape.
        raise BadRequest("multipart field name is not valid UTF-8") from None
    return name
