"""``parsed_body`` and ``truncated_body``, per the plugin's getParsedBody:
the parser chosen by content type, the partial-body and content-length
truncation rules, and JSON (numbers exact), form and multipart bodies."""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from sidecar.envoy.bad_request import BadRequest
from sidecar.envoy.multipart import MultipartReader, form_boundary
from sidecar.envoy.path_and_query import parse_query

__all__ = ["MAX_BODY_JSON_DEPTH", "parse_request_body"]

# Nesting allowed in a parsed JSON body (Go allows 10000). Keeps the whole
# document within orjson's serialisation limit (254 levels, with a few levels
# of document around the body) and far from Python's recursion limit.
MAX_BODY_JSON_DEPTH: Final = 200

_PARTIAL_BODY_HEADER: Final = "x-envoy-auth-partial-body"

_INT64_TEXT: Final = re.compile(r"[+-]?[0-9]+")


def parse_request_body(headers: Mapping[str, str], body: str, raw_body: bytes) -> tuple[Any, bool]:
    """(parsed_body, truncated_body) per the plugin's getParsedBody."""
    # Envoy marks a body cut at max_request_bytes; nothing is parsed then.
    if headers.get(_PARTIAL_BODY_HEADER) == "true":
        return None, True
    ctype = headers.get("content-type")
    if ctype is None:
        return None, False
    # Substring matches, case-sensitive, in the plugin's order.
    if "application/json" in ctype:
        parse = _parse_json_body
    elif "application/grpc" in ctype:
        # The plugin decodes gRPC messages only with a proto descriptor set
        # (its proto-descriptor option); without one it gives null/false,
        # which is what this sidecar, having no descriptor support, does.
        return None, False
    elif "application/x-www-form-urlencoded" in ctype:
        parse = _parse_form_body
    elif "multipart/form-data" in ctype:
        parse = _parse_multipart_body
    else:
        return None, False

    payload: str | bytes
    if body:
        payload = body
        length = len(body) if body.isascii() else len(body.encode("utf-8"))
    elif raw_body:
        payload = raw_body
        length = len(raw_body)
    else:
        # No body sent (even if content-length says there is one).
        return None, False

    content_length = headers.get("content-length")
    if content_length is not None and _is_truncated(content_length, length):
        return None, True
    return parse(payload, ctype), False


def _is_truncated(content_length: str, body_length: int) -> bool:
    # strconv.ParseInt(s, 10, 64): ASCII digits with an optional sign, no
    # spaces, within int64; -1 means unknown.
    if not _INT64_TEXT.fullmatch(content_length):
        raise BadRequest("content-length is not an integer")
    declared = int(content_length)
    if not -(2**63) <= declared < 2**63:
        raise BadRequest("content-length is out of range")
    return declared != -1 and declared > body_length


def _text(payload: str | bytes, what: str) -> str:
    if isinstance(payload, str):
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        # Go would carry the invalid bytes into strings; refuse instead.
        raise BadRequest(f"{what} is not valid UTF-8") from None


def _parse_json_body(payload: str | bytes, ctype: str) -> Any:
    return _loads_json(_text(payload, "body"), "body")


def _parse_form_body(payload: str | bytes, ctype: str) -> Any:
    return parse_query(_text(payload, "body"), what="form body")


def _parse_multipart_body(payload: str | bytes, ctype: str) -> Any:
    boundary = form_boundary(ctype)
    if boundary is None:
        return None
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    values: dict[str, list[Any]] = {}
    for name, part_type, content in MultipartReader(data, boundary).form_parts():
        value: Any
        if b"application/json" in part_type:
            value = _loads_json(_text(content, "multipart part"), "multipart part")
        else:
            value = _text(content, "multipart part")
        values.setdefault(name, []).append(value)
    return values


def _exact_float(text: str) -> float:
    """A float only if it denotes exactly the decimal number in the text (so
    the number OPA reads back is the one the client sent, as in Go, which
    keeps the text). Otherwise refuse: rounding could flip a comparison."""
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


def _loads_json(text: str, what: str) -> Any:
    """util.UnmarshalJSON as OPA does it: one value of any type, trailing
    whitespace only, last duplicate key wins, numbers exact.

    orjson does the validation (it refuses NaN/Infinity, lone surrogate
    escapes, control characters and trailing data). It turns integers beyond
    64 bits into floats and rounds long decimals, so a result holding any
    float is read again by the stdlib parser with exact integers and checked
    floats (cheaper than scanning the text for such numbers up front).

    Refused where Go accepts: lone surrogate escapes (Go writes U+FFFD) and
    a trailing ``null`` token (OPA's trailing-data check misses it)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson also refuses numbers beyond the float range, which Go keeps.
        raise BadRequest(f"{what} is not valid JSON (or a number in it is out of range)") from None
    kind = type(value)
    if kind is float or ((kind is dict or kind is list) and _holds_float(value, 1, what)):
        try:
            value = json.loads(text, parse_float=_exact_float)
        except BadRequest:
            raise
        except ValueError:
            # An integer past Python's digit limit (orjson took it as a float).
            raise BadRequest(f"{what} holds a JSON number that cannot be kept exact") from None
    return value


def _holds_float(container: Any, depth: int, what: str) -> bool:
    """Whether a parsed JSON array/object holds a float anywhere; refuses
    nesting beyond MAX_BODY_JSON_DEPTH on the way."""
    if depth > MAX_BODY_JSON_DEPTH:
        raise BadRequest(f"{what} JSON is nested too deeply")
    found = False
    for item in container.values() if type(container) is dict else container:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _holds_float(item, depth + 1, what)):
            found = True
    return found
