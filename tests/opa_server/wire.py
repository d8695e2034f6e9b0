"""Bytes on the wire: OPA-shaped JSON encoding and request-body decoding."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any, Final

import yaml

# OPA's default server.decoding limits.
MAX_BODY_BYTES: Final = 256 * 1024 * 1024
MAX_GZIP_BYTES: Final = 512 * 1024 * 1024

# Go's encoder escapes these even inside otherwise raw UTF-8 strings.
_GO_ESCAPES: Final = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class BadInput(Exception):
    """A request body or parameter that cannot be decoded (OPA answers 400)."""


class NoInput:
    """Marker for "the request carries no input document"."""


NO_INPUT: Final = NoInput()


def encode(value: Any, *, pretty: bool = False) -> bytes:
    """Encode like Go's json.Encoder: compact (or two-space indent) plus one newline."""
    if pretty:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, indent=2)
    else:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text.translate(_GO_ESCAPES) + "\n").encode("utf-8", "surrogatepass")


def error_body(code: str, message: str, errors: list[dict[str, Any]] | None = None) -> bytes:
    """OPA error envelope: always indented, keys in the order code, message, errors."""
    envelope: dict[str, Any] = {"code": code, "message": message}
    if errors:
        envelope["errors"] = errors
    return encode(envelope, pretty=True)


def flag(values: Iterable[str]) -> bool:
    """OPA's boolean query parameter: true when present and empty or equal to "true" (any case)."""
    return any(value == "" or value.lower() == "true" for value in values)


def gunzip(raw: bytes, limit: int = MAX_GZIP_BYTES) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BadInput(f"could not decompress the body: {exc}") from None
    if len(out) > limit:
        raise BadInput("gzip payload too large")
    if not inflater.eof:
        raise BadInput("could not decompress the body: unexpected EOF")
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def parse_document(raw: bytes, content_type: str) -> Any:
    """Parse a JSON (or, when the content type says so, YAML) document; raises ValueError."""
    text = raw.decode("utf-8")
    if "yaml" in content_type.lower():
        value = yaml.safe_load(text)
        json.dumps(value)  # YAML-only types (dates, ...) have no JSON form
        return value
    # Go's decoder has no NaN/Infinity literals.
    return json.loads(text, parse_constant=_reject_constant)


def _go_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


def input_from_v1_body(raw: bytes, content_type: str) -> Any:
    """The `input` of a `POST /v1/data` body, or NO_INPUT; raises BadInput."""
    if not raw:
        return NO_INPUT
    try:
        request = parse_document(raw, content_type)
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise BadInput(f"body contains malformed input document: {exc}") from None
    if request is None:  # Go decodes `null` into a struct as a no-op
        return NO_INPUT
    if not isinstance(request, dict):
        raise BadInput(
            "body contains malformed input document: json: cannot unmarshal "
            f"{_go_kind(request)} into Go value of type types.DataRequestV1"
        )
    value = request.get("input")
    return NO_INPUT if value is None else value


def input_from_v0_body(raw: bytes, content_type: str) -> Any:
    """The whole v0 body is the input; an empty body is no input."""
    if not raw:
        return NO_INPUT
    try:
        value = parse_document(raw, content_type)
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise BadInput(
            f"unexpected parse error for input: body contains malformed input document: {exc}"
        ) from None
    return NO_INPUT if value is None else value


def input_from_query(values: list[str]) -> Any:
    """`GET /v1/data?input=...`: the last value wins."""
    if not values:
        return NO_INPUT
    text = values[-1]
    if not text.strip():
        raise BadInput("parameter contains malformed input document: EOF")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise BadInput(f"parameter contains malformed input document: {exc}") from None
    return NO_INPUT if value is None else value
