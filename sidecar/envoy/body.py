"""``parsed_body`` and ``truncated_body``: the body as the application will read it.

The input document has the plugin's shape, but the rules are stricter than
its getParsedBody, because a view the application does not share is worse
than none:

- ``truncated_body`` is true whenever the upstream may receive bytes the
  policy did not see. Envoy's ``x-envoy-auth-partial-body`` says "false" for
  a chunked or HTTP/2 body cut exactly at its buffer limit, so a body that
  fills the limit counts as complete only when its content-length says so.
- The parser is chosen by the media type (``media_type``), never by
  substring: JSON types (``application/json``, ``+json``), forms, and
  ``multipart/form-data``; gRPC with a descriptor set (``grpc_body``);
  other types are not parsed (``null``).
- What application parsers could read differently is refused
  (``BadRequest``): duplicate JSON keys, a repeated form field, a charset
  other than UTF-8, a body with no content-type, non-canonical multipart.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from sidecar.envoy.bad_request import BadRequest
from sidecar.envoy.grpc_body import GrpcMethods, is_grpc
from sidecar.envoy.media_type import MediaType, parse_media_type
from sidecar.envoy.multipart import form_boundary, form_parts
from sidecar.envoy.path_and_query import parse_query

__all__ = ["DEFAULT_ENVOY_BODY_LIMIT", "MAX_BODY_JSON_DEPTH", "parse_request_body", "request_body_bytes"]

# Nesting allowed in a parsed JSON body (Go allows 10000). Keeps the whole
# document within orjson's serialisation limit (254 levels, with a few levels
# of document around the body) and far from Python's recursion limit.
MAX_BODY_JSON_DEPTH: Final = 200

# Envoy's with_request_body.max_request_bytes in the shipped configurations.
DEFAULT_ENVOY_BODY_LIMIT: Final = 8192

_PARTIAL_BODY_HEADER: Final = "x-envoy-auth-partial-body"
# Types python-multipart (Starlette, FastAPI) also reads as a form, werkzeug not.
_FORM_ALIASES: Final = frozenset({"application/x-url-encoded"})
_DIGITS: Final = re.compile(r"[0-9]{1,19}")
# Envoy writes "!" for each byte that is not UTF-8 when it sends the body as
# a string (docs/envoy-bodies.md): the policy cannot know what was sent.
_REPLACED_BYTE: Final = "!"


def request_body_bytes(body: str, raw_body: bytes) -> bytes:
    """The body bytes Envoy forwarded, from ``body`` (string) or ``raw_body``
    (``pack_as_bytes``); refuses what cannot be known exactly."""
    if body:
        if _REPLACED_BYTE in body:
            raise BadRequest(
                "body sent as a string holds '!', which Envoy also writes for bytes that are not "
                "UTF-8: configure with_request_body.pack_as_bytes"
            )
        data = body.encode("utf-8")
        if raw_body and raw_body != data:
            raise BadRequest("CheckRequest carries two different bodies")
        return data
    return raw_body


def parse_request_body(
    headers: Mapping[str, str],
    data: bytes,
    *,
    envoy_limit: int,
    path: str = "",
    grpc_methods: GrpcMethods | None = None,
) -> tuple[Any, bool]:
    """(parsed_body, truncated_body) of the forwarded body ``data``.
    ``envoy_limit`` is Envoy's max_request_bytes (0: Envoy forwards none).
    With ``grpc_methods`` (``--proto-descriptor``) a gRPC body is decoded as
    the input message of the method ``path`` names; without, it is not parsed."""
    if len(data) > max(envoy_limit, 0):
        raise BadRequest(
            f"forwarded body of {len(data)} bytes is over --envoy-max-request-bytes ({envoy_limit})",
            http_status=413,
        )
    truncated = _is_truncated(headers, len(data), envoy_limit)
    if not data:
        return None, truncated
    ctype = headers.get("content-type")
    if ctype is None:
        # Some frameworks read such a body as JSON (FastAPI), others not at all.
        raise BadRequest("request has a body but no content-type")
    media_type = parse_media_type(ctype)
    if grpc_methods is not None and is_grpc(media_type):
        return grpc_methods.parsed_body(media_type, path, headers, data, truncated=truncated), truncated
    if truncated:
        return None, True
    return _parse(media_type, data), False


def _is_truncated(headers: Mapping[str, str], forwarded: int, envoy_limit: int) -> bool:
    if headers.get(_PARTIAL_BODY_HEADER) == "true":
        return True
    content_length = headers.get("content-length")
    if content_length is not None:
        if not _DIGITS.fullmatch(content_length):
            raise BadRequest("content-length is not a decimal number")
        declared = int(content_length)
        if declared < forwarded:
            raise BadRequest("forwarded body is longer than its content-length")
        if declared > forwarded:
            return True
        if declared > 0:
            return False  # exactly the announced bytes
    if forwarded and forwarded >= envoy_limit:
        # Cut at the limit or ending there: Envoy's flag cannot tell which.
        return True
    # Envoy passes no transfer-encoding to the check (docs/envoy-bodies.md); a
    # check that carries one announces a body that was never buffered (no flag).
    return forwarded == 0 and _PARTIAL_BODY_HEADER not in headers and "transfer-encoding" in headers


def _parse(media_type: MediaType, data: bytes) -> Any:
    if media_type.is_json:
        _require_utf8_charset(media_type)
        return _loads_json(_text(data, "body"), "body")
    if media_type.essence == "application/x-www-form-urlencoded":
        _require_utf8_charset(media_type)
        if not data.isascii():
            # Starlette decodes a form's raw bytes as Latin-1, werkzeug as UTF-8;
            # percent-escapes decode alike (as UTF-8) everywhere.
            raise BadRequest("form body holds raw bytes beyond ASCII (escape them)")
        return parse_form(_text(data, "form body"))
    if media_type.essence == "multipart/form-data":
        _require_utf8_charset(media_type)
        return _parse_multipart(data, form_boundary(media_type))
    if media_type.essence in _FORM_ALIASES:
        raise BadRequest("content-type is a form alias that some parsers read as a form and others not")
    return None


def _require_utf8_charset(media_type: MediaType) -> None:
    charset = media_type.parameters.get("charset")
    if charset is not None and charset.lower() != "utf-8":
        raise BadRequest("body charset is not utf-8")


def parse_form(text: str) -> dict[str, list[str]]:
    """A form body: the query rules, plus every pair in ``name=value`` form
    (a bare name is null to some parsers and "" to others)."""
    if text and any(not pair or "=" not in pair for pair in text.split("&")):
        raise BadRequest("form body has an empty pair or a name without '='")
    return parse_query(text, what="form body")


def _parse_multipart(data: bytes, boundary: bytes) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for part in form_parts(data, boundary):
        value: Any
        if part.media_type is not None:
            _require_utf8_charset(part.media_type)
        if part.media_type is not None and part.media_type.is_json:
            value = _loads_json(_text(part.content, "multipart part"), "multipart part")
        else:
            value = _text(part.content, "multipart part")
        values[part.name] = [value]
    return values


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not valid UTF-8") from None


def _exact_float(text: str) -> float:
    """A float only if it denotes exactly the decimal number in the text (so
    the number OPA reads back is the one the client sent). Otherwise refuse:
    rounding could flip a comparison."""
    value = float(text)
    if math.isfinite(value):
        shortest = repr(value)
        if shortest == text:
            return value
        try:
            if decimal.Decimal(shortest) == decimal.Decimal(text):
                return value
        except decimal.InvalidOperation:
            pass  # exponent beyond what Decimal holds: not representable
    raise BadRequest("JSON number cannot be represented exactly")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers keep the first or the last: refuse either reading.
        raise BadRequest("JSON body repeats a key in an object")
    return obj


def _loads_json(text: str, what: str) -> Any:
    """One JSON value with exact numbers and no duplicate keys.

    orjson does the validation (it refuses NaN/Infinity, lone surrogate
    escapes, control characters, a BOM and trailing data). A document it
    would write back byte for byte holds no duplicate key and no rounded
    number; any other document holding an object or a float is read again by
    the stdlib parser, refusing duplicate keys and keeping numbers exact."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson also refuses numbers beyond the float range.
        raise BadRequest(f"{what} is not valid JSON (or a number in it is out of range)") from None
    kind = type(value)
    if kind is float or ((kind is dict or kind is list) and _needs_second_pass(value, 1, what)):
        try:
            compact = orjson.dumps(value) == text.encode("utf-8")
        except orjson.JSONEncodeError:
            compact = False
        if not compact:
            try:
                value = json.loads(text, parse_float=_exact_float, object_pairs_hook=_unique_keys)
            except BadRequest:
                raise
            except ValueError:
                # An integer past Python's digit limit (orjson took it as a float).
                raise BadRequest(f"{what} holds a JSON number that cannot be kept exact") from None
    return value


def _needs_second_pass(container: Any, depth: int, what: str) -> bool:
    """Whether a parsed JSON array/object holds an object or a float (which
    the second pass checks); refuses nesting beyond MAX_BODY_JSON_DEPTH."""
    if depth > MAX_BODY_JSON_DEPTH:
        raise BadRequest(f"{what} JSON is nested too deeply")
    found = type(container) is dict
    for item in container.values() if type(container) is dict else container:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _needs_second_pass(item, depth + 1, what)):
            found = True
    return found
