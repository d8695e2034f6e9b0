"""What real application parsers make of a request body: werkzeug (Flask),
Starlette on python-multipart (Starlette, FastAPI), and the standard
library's json and urllib.parse. Each returns the body in the input
document's shape (``{name: [value]}`` for forms, the JSON value for JSON), or
``UNPARSED`` when that parser does not read a body of this type, or
``FAILED`` when it refuses it."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

from starlette.requests import Request as StarletteRequest
from werkzeug.exceptions import HTTPException
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request as WerkzeugRequest

UNPARSED: Final = "<not parsed>"
FAILED: Final = "<refused>"


def _as_text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def werkzeug_view(content_type: str, body: bytes) -> Any:
    environ = EnvironBuilder(
        method="POST", input_stream=io.BytesIO(body), content_type=content_type, content_length=len(body)
    ).get_environ()
    request = WerkzeugRequest(environ)
    try:
        if request.is_json:
            return request.get_json()
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            fields: dict[str, list[Any]] = {k: list(v) for k, v in request.form.lists()}
            for name, files in request.files.lists():
                fields.setdefault(name, []).extend(_as_text(f.read()) for f in files)
            return fields
    except (HTTPException, ValueError, UnicodeDecodeError):
        return FAILED
    return UNPARSED


def starlette_view(content_type: str, body: bytes) -> Any:
    return asyncio.run(_starlette_view(content_type, body))


async def _starlette_view(content_type: str, body: bytes) -> Any:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode("latin-1"))],
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    request = StarletteRequest(scope, receive)
    essence = content_type.partition(";")[0].strip().lower()
    try:
        if essence in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            fields: dict[str, list[Any]] = {}
            for name, value in form.multi_items():
                text = value if isinstance(value, str) else _as_text(await value.read())
                fields.setdefault(name, []).append(text)
            return fields
        # FastAPI's rule for a JSON body: application/json or a +json subtype.
        if essence.startswith("application/") and (
            essence == "application/json" or essence.endswith("+json")
        ):
            return await request.json()
    except Exception:  # Starlette raises its own and its parser's errors
        return FAILED
    return UNPARSED


def stdlib_view(content_type: str, body: bytes) -> Any:
    essence = content_type.partition(";")[0].strip().lower()
    try:
        if essence == "application/json" or (
            essence.startswith("application/") and essence.endswith("+json")
        ):
            return json.loads(body)
        if essence == "application/x-www-form-urlencoded":
            return urllib.parse.parse_qs(
                body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, errors="strict"
            )
    except (ValueError, UnicodeDecodeError):
        return FAILED
    return UNPARSED


PARSERS: Final[dict[str, Callable[[str, bytes], Any]]] = {
    "werkzeug": werkzeug_view,
    "starlette": starlette_view,
    "stdlib": stdlib_view,
}
