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
# Every value at once, one a line (one regex call per check, not one per
# header). A line break is in neither class, and the callers check that the
# joined text holds exactly one per join, so no value can hide one and each
# line is exactly one value.
_LINES: Final = rf"{_VALUE}(?:\n{_VALUE})*"
_PRINTABLE_LINES: Final = re.compile(_LINES)
_PRINTABLE_LINES_BYTES: Final = re.compile(_LINES.encode("ascii"))


def request_headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> dict[str, str]:
    """name -> value, a repeated header joined with "," as Envoy joins it."""
    if http.header_map.headers:
        headers = _from_raw(http)
        if http.path and headers.get(":path") != http.path:
            raise BadRequest("path differs from the :path header's bytes")
        if http.headers and dict(http.headers) != headers:
            raise BadRequest("CheckRequest carries two different header sets")
        return headers
    headers = dict(http.headers)
    values = "\n".join((http.path, *headers.values()))
    if values.count("\n") != len(headers) or not _PRINTABLE_LINES.fullmatch(values):
        raise BadRequest("a header value holds characters outside printable ASCII, or space at an end")
    if "!" in values:
        raise BadRequest(
            "a header value holds '!', which Envoy also writes for bytes that are not UTF-8 "
            "(gRPC mode with encode_raw_headers carries the bytes)"
        )
    return headers


def _from_raw(http: attribute_context_pb2.AttributeContext.HttpRequest) -> dict[str, str]:
    entries = [
        (entry.key.lower(), entry.raw_value or entry.value.encode("utf-8"))
        for entry in http.header_map.headers
    ]
    values = b"\n".join(raw for _, raw in entries)
    if values.count(b"\n") != len(entries) - 1 or not _PRINTABLE_LINES_BYTES.fullmatch(values):
        raise BadRequest("a header value holds bytes outside printable ASCII, or space at an end")
    headers: dict[str, str] = {}
    for name, raw in entries:
        value = raw.decode("ascii")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers
