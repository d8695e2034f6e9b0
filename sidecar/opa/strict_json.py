"""Strict JSON for OPA answers: anything a lenient parser would guess at is an error.

orjson rejects invalid UTF-8, lone surrogates, NaN/Infinity and trailing data;
the stdlib pass then rejects duplicate keys (which parsers resolve differently,
so a duplicated ``allowed`` could mean yes to one reader and no to another),
unless the bytes are exactly what orjson writes back for the value.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class StrictJSONError(ValueError):
    """The bytes are not one unambiguous JSON document."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise StrictJSONError("duplicate key in JSON object")
    return obj


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as a JSON object, refusing anything ambiguous."""
    try:
        value = orjson.loads(data)
        # Fast path: bytes that orjson writes back identically hold no
        # duplicate key (a dropped duplicate would shorten them) and no number
        # orjson could not keep exact. OPA's compact answers usually qualify.
        compact = data[:-1] if data.endswith(b"\n") else data
        try:
            unambiguous = orjson.dumps(value) == compact
        except orjson.JSONEncodeError:
            unambiguous = False
        if not unambiguous:
            value = json.loads(data, object_pairs_hook=_no_duplicates)
    except StrictJSONError:
        raise
    except (ValueError, RecursionError) as exc:
        # Position only: the text may hold a decision's content.
        raise StrictJSONError(f"invalid JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise StrictJSONError("JSON answer is not an object")
    return value
