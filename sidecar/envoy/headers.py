"""The request's headers as the application receives them, or a refusal.

Envoy writes ``!`` for every byte of a header value that is not UTF-8, in the
gRPC ``headers`` map and in an HTTP-mode check alike, while the upstream gets
the bytes as sent (docs/envoy-bodies.md). And where a value is UTF-8 beyond
ASCII, applications decode it as Latin-1 (WSGI, ASGI) while the policy reads
UTF-8. So a value is accepted only as printable ASCII, and, when it came as
a string, only without ``!``, which may stand for a replaced byte. With
Envoy's ``encode_raw_headers`` the check carries the bytes (``header_map``)
and ``!`` is then exact.
"""

from __future__ import annotations

import re
from typing import Final

from sidecar._proto.envoy.service.auth.v3 import attribute_context_pb2
from sidecar.envoy.bad_request import BadRequest

__all__ = ["request_headers"]

# Printable ASCII, with inner spaces and tabs only: HTTP/1.1 trims the ends of a
# value but Envoy passes an HTTP/2 value's as sent, and applications differ on
# trimming them (RFC 9113 forbids them), so " admin" could be read as "admin".
_VALUE: Final = r"(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?"
_PRINTABLE_ASCII: Final = re.compile(_VALUE)
_PRINTABLE_ASCII_BYTES: Final = re.compile(_VALUE.encode("ascii"))


def request_headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> dict[str, str]:
    """name -> value, a repeated header joined with "," as Envoy joins it."""
    if http.header_map.headers:
        headers = _from_raw(http)
        if http.path and headers.get(":path") != http.path:
            raise BadRequest("path differs from the :path header's bytes")
        if http.headers and dict(http.headers) != headers:
            raise BadRequest("CheckRequest carries two different header sets")
        return headers
    for value in (http.path, *http.headers.values()):
        if not _PRINTABLE_ASCII.fullmatch(value):
            raise BadRequest("a header value holds characters outside printable ASCII, or space at an end")
        if "!" in value:
            raise BadRequest(
                "a header value holds '!', which Envoy also writes for bytes that are not UTF-8 "
                "(gRPC mode with encode_raw_headers carries the bytes)"
            )
    return dict(http.headers)


def _from_raw(http: attribute_context_pb2.AttributeContext.HttpRequest) -> dict[str, str]:
    headers: dict[str, str] = {}
    for entry in http.header_map.headers:
        raw = entry.raw_value or entry.value.encode("utf-8")
        if not _PRINTABLE_ASCII_BYTES.fullmatch(raw):
            raise BadRequest("a header value holds bytes outside printable ASCII, or space at an end")
        value = raw.decode("ascii")
        name = entry.key.lower()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers
