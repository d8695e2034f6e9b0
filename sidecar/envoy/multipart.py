"""multipart/form-data bodies: the canonical form, or a refusal.

Multipart parsers disagree on almost every liberty RFC 7578 and RFC 2046
leave open: LF-only line ends, whitespace after a boundary, preambles,
folded or repeated part headers, Content-Disposition parameters they do not
know, escapes in quoted names, RFC 2231 filenames, Content-Transfer-Encoding.
Each disagreement is a body the policy could read one way and the
application another. So this reader accepts one canonical shape, the one
every mainstream parser reads alike, and refuses (``BadRequest``) the rest:

    --B CRLF
    Content-Disposition: form-data; name="n"[; filename="f"] CRLF
    [Content-Type: t CRLF]
    CRLF
    content CRLF
    --B-- [CRLF]

with each name used once, and the delimiter nowhere but at its places.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from sidecar.envoy.bad_request import BadRequest
from sidecar.envoy.media_type import MediaType, parse_media_type

__all__ = ["FormPart", "form_boundary", "form_parts"]

# RFC 2046 bchars, 1 to 70 of them, not ending in a space.
_BOUNDARY: Final = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# The one Content-Disposition shape accepted: lower-case parameter names,
# quoted values without quotes, backslashes, percent signs or control bytes
# (browsers and parsers escape and unescape those differently).
_QUOTED_VALUE: Final = r'"([ !#$&-\[\]-~]+)"'
_DISPOSITION: Final = re.compile(rf"form-data; name={_QUOTED_VALUE}(?:; filename={_QUOTED_VALUE})?")
_HEADER: Final = re.compile(rb"([A-Za-z-]+): ([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)")
_KNOWN_HEADERS: Final = frozenset({b"content-disposition", b"content-type"})


@dataclass(frozen=True, slots=True)
class FormPart:
    name: str
    media_type: MediaType | None  # None: the part has no Content-Type
    content: bytes
    is_file: bool


def form_boundary(media_type: MediaType) -> bytes:
    boundary = media_type.parameters.get("boundary")
    if boundary is None:
        raise BadRequest("multipart content-type has no boundary")
    if not _BOUNDARY.fullmatch(boundary):
        raise BadRequest("multipart boundary is not 1 to 70 RFC 2046 characters")
    return boundary.encode("ascii")


def form_parts(data: bytes, boundary: bytes) -> Iterator[FormPart]:
    """The parts of a canonical multipart/form-data body, in order."""
    dash = b"--" + boundary
    delimiter = b"\r\n" + dash
    if not data.startswith(dash + b"\r\n"):
        if data.startswith(dash + b"--"):
            _check_close(data, len(dash) + 2)
            return
        raise BadRequest("multipart body does not start with its boundary line")
    # Every occurrence of the boundary must be a delimiter: a parser that
    # accepts other line ends would see a part boundary where this one does not.
    if data.count(dash) != data.count(delimiter) + 1:
        raise BadRequest("multipart boundary appears outside a delimiter line")
    names: set[str] = set()
    pos = len(dash) + 2
    while True:
        end = data.find(delimiter, pos)
        if end == -1:
            raise BadRequest("multipart body ends without its closing boundary")
        part = _part(data[pos:end])
        if part.name in names:
            raise BadRequest("multipart body repeats a field name")
        names.add(part.name)
        yield part
        after = end + len(delimiter)
        if data.startswith(b"--", after):
            _check_close(data, after + 2)
            return
        if not data.startswith(b"\r\n", after):
            raise BadRequest("multipart boundary line has trailing characters")
        pos = after + 2


def _check_close(data: bytes, pos: int) -> None:
    if data[pos:] not in (b"", b"\r\n"):
        raise BadRequest("multipart body has data after its closing boundary")


def _part(raw: bytes) -> FormPart:
    head_end = raw.find(b"\r\n\r\n")
    if raw.startswith(b"\r\n"):
        raise BadRequest("multipart part has no Content-Disposition")
    if head_end == -1:
        raise BadRequest("multipart part headers are not terminated")
    headers: dict[bytes, str] = {}
    for line in raw[:head_end].split(b"\r\n"):
        match = _HEADER.fullmatch(line)
        if match is None:
            raise BadRequest("multipart part header is malformed (folded, bare CR/LF or non-ASCII)")
        name = match.group(1).lower()
        if name not in _KNOWN_HEADERS:
            raise BadRequest("multipart part has a header other than Content-Disposition and Content-Type")
        if name in headers:
            raise BadRequest("multipart part repeats a header")
        headers[name] = match.group(2).decode("ascii")
    disposition = headers.get(b"content-disposition")
    if disposition is None:
        raise BadRequest("multipart part has no Content-Disposition")
    form = _DISPOSITION.fullmatch(disposition)
    if form is None:
        raise BadRequest("multipart Content-Disposition is not one plain form-data with one name")
    ctype = headers.get(b"content-type")
    media_type = parse_media_type(ctype) if ctype is not None else None
    return FormPart(form.group(1), media_type, raw[head_end + 4 :], form.group(2) is not None)
