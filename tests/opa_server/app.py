"""The aiohttp application: OPA's data and health routes, token check and HTTP quirks."""

from __future__ import annotations

import gzip
import hmac
import math
import re
import time
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .evaluation import BadPath, EvaluationFailed, Evaluator, parse_data_path, ref_string
from .wire import (
    MAX_BODY_BYTES,
    NO_INPUT,
    BadInput,
    encode,
    error_body,
    flag,
    gunzip,
    input_from_query,
    input_from_v0_body,
    input_from_v1_body,
)

JSON: Final = "application/json"
GZIP_MIN_BYTES: Final = 1024  # OPA's server.encoding.gzip.min_length
MAX_AUTHORIZATION_BYTES: Final = 8192  # longer Authorization headers are ignored by OPA
_BEARER: Final = re.compile(r"Bearer\s+(\S+)")
_MISSING_INPUT: Final = {"code": "api_usage_warning", "message": "'input' key missing from the request"}

EVALUATOR: Final = web.AppKey("evaluator", Evaluator)
MAX_BODY: Final = web.AppKey("max_body", int)


def _error(status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(code, message, errors), content_type=JSON)


def _compressed(request: web.Request, response: web.Response) -> web.Response:
    """Data endpoints gzip large answers when asked, and always say they might."""
    response.headers["Vary"] = "Accept-Encoding"
    accepted = {part.split(";")[0].strip() for part in request.headers.get("Accept-Encoding", "").split(",")}
    body = response.body
    if "gzip" in accepted and isinstance(body, bytes) and len(body) >= GZIP_MIN_BYTES:
        response.body = gzip.compress(body)
        response.headers["Content-Encoding"] = "gzip"
    return response


async def _read_body(request: web.Request) -> bytes:
    limit = request.app[MAX_BODY]
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BadInput("request body too large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if "gzip" in request.headers.get("Content-Encoding", ""):
        raw = gunzip(raw)
    return raw


def _ref_of(request: web.Request) -> tuple[str | int, ...]:
    # The raw path keeps %2F inside a key; the first three parts are "", "v1"/"v0", "data".
    parts = request.rel_url.raw_path.split("/", 3)
    return parse_data_path(parts[3] if len(parts) > 3 else "")


def _data_endpoint(handler: Handler) -> Handler:
    """Maps a data handler's failures to OPA's error answers; gzips as OPA's data endpoints do."""

    async def endpoint(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except BadPath as exc:
            # OPA fails this while preparing the query, with an error its writer does not classify.
            response = _error(500, "internal_error", f"invalid_parameter: invalid path: {exc}")
        except BadInput as exc:
            response = _error(400, "invalid_parameter", str(exc))
        except EvaluationFailed as exc:
            response = _error(exc.status, exc.code, exc.message, exc.errors)
        assert isinstance(response, web.Response)
        return _compressed(request, response)

    return endpoint


def _success(request: web.Request, value: Any) -> web.Response:
    try:
        body = encode(value, pretty=flag(request.query.getall("pretty", [])))
    except ValueError as exc:  # a number the engine returned beyond a double's range
        return _error(500, "internal_error", f"result cannot be encoded as JSON: {exc}")
    return web.Response(body=body, content_type=JSON)


@_data_endpoint
async def v1_data(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    query = request.query
    ref = _ref_of(request)
    if request.method == "GET":
        input_doc = input_from_query(query.getall("input", []))
    else:
        input_doc = input_from_v1_body(await _read_body(request), request.headers.get("Content-Type", ""))
    eval_started = time.perf_counter_ns()
    defined, value = request.app[EVALUATOR].document(ref, None if input_doc is NO_INPUT else input_doc)
    eval_ns = time.perf_counter_ns() - eval_started
    envelope: dict[str, Any] = {}  # OPA's field order: metrics, result, warning
    if flag(query.getall("metrics", [])) or flag(query.getall("instrument", [])):
        envelope["metrics"] = {
            "timer_rego_query_eval_ns": eval_ns,
            "timer_server_handler_ns": time.perf_counter_ns() - started,
        }
    if defined:
        envelope["result"] = value
    if request.method == "POST" and input_doc is NO_INPUT:
        envelope["warning"] = _MISSING_INPUT
    return _success(request, envelope)


@_data_endpoint
async def v0_data(request: web.Request) -> web.Response:
    ref = _ref_of(request)
    input_doc = input_from_v0_body(await _read_body(request), request.headers.get("Content-Type", ""))
    plain_input = None if input_doc is NO_INPUT else input_doc
    evaluator = request.app[EVALUATOR]
    defined, value = evaluator.document(ref, plain_input)
    if not defined:
        kind = "document undefined" if evaluator.has_rules(ref, plain_input) else "document missing"
        return _error(404, "undefined_document", f"{kind}: {ref_string(ref)}")
    return _success(request, value)


async def health(request: web.Request) -> web.Response:
    # No bundles or plugins exist here, so ?bundles and ?plugins are always satisfied.
    if request.app[EVALUATOR].healthy():
        return web.Response(body=encode({}), content_type=JSON)
    return web.Response(status=500, body=encode({"error": "unable to perform evaluation"}), content_type=JSON)


async def health_rule(request: web.Request) -> web.Response:
    """`GET /health/<rule>`: 200 when `data.system.health.<rule>` is true."""
    try:
        ref = ("system", "health", *parse_data_path(request.rel_url.raw_path.split("/", 2)[2]))
        input_doc = {"plugins_ready": True, "plugin_state": {}}
        defined, value = request.app[EVALUATOR].document(ref, input_doc)
    except (BadPath, EvaluationFailed) as exc:
        return web.Response(status=500, body=encode({"error": str(exc)}), content_type=JSON)
    if defined and value is True:
        return web.Response(body=encode({}), content_type=JSON)
    problem = "returned unexpected value" if defined else "was undefined"
    message = f"health check ({ref_string(ref)}) {problem}"
    return web.Response(status=500, body=encode({"error": message}), content_type=JSON)


@web.middleware
async def go_router_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown routes and wrong methods answer as OPA's Go router does."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
        return web.Response(status=404, body=b"404 page not found\n", headers=headers)
    except web.HTTPMethodNotAllowed:
        # The data routes answer a bare 405; the health routes, on Go's ServeMux, name the
        # methods they allow, in words, except to HEAD (which never gets a body).
        if not request.path.startswith("/health") or request.method == "HEAD":
            return web.Response(status=405)
        headers = {
            "Allow": "GET, HEAD",
            "Content-Type": "text/plain; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
        }
        return web.Response(status=405, body=b"Method Not Allowed\n", headers=headers)


@web.middleware
async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An announced oversize body is refused before any handler (or the authorizer) runs."""
    length, limit = request.content_length, request.app[MAX_BODY]
    if length is not None and length > limit:
        message = f"request body too large: {binary_size(length)} exceeds limit of {limit} bytes"
        refused = _error(400, "invalid_parameter", f"{message} (server.decoding.max_length)")
        refused.force_close()  # as OPA: the unread body makes the connection unusable
        return refused
    return await handler(request)


def binary_size(size: int) -> str:
    """A size as OPA words it: `256 MiB`, `1.5 KiB`, `12 B` (one decimal below 10)."""
    if size < 10:
        return f"{size} B"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    exponent = min(int(math.log(size, 1024)), len(units) - 1)
    value = math.floor(size / 1024**exponent * 10 + 0.5) / 10
    return f"{value:.0f} {units[exponent]}" if value >= 10 else f"{value:.1f} {units[exponent]}"


@web.middleware
async def trailing_slash(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.rel_url.raw_path
    if path != "/" and path.endswith("/"):
        location = path.rstrip("/") or "/"
        if request.rel_url.raw_query_string:
            location += "?" + request.rel_url.raw_query_string
        return web.Response(status=301, headers={"Location": location})
    return await handler(request)


def bearer_token(expected: str) -> Middleware:
    """Every request, /health included, must carry `Authorization: Bearer <expected>`."""
    wanted = expected.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        match = _BEARER.fullmatch(header) if len(header) <= MAX_AUTHORIZATION_BYTES else None
        if match is None or not hmac.compare_digest(match[1].encode(), wanted):
            return _error(401, "unauthorized", "request rejected by administrative policy")
        return await handler(request)

    return check


def build_app(
    evaluator: Evaluator, *, token: str | None = None, max_body: int = MAX_BODY_BYTES
) -> web.Application:
    middlewares: list[Middleware] = [go_router_answers, body_limit]
    if token is not None:
        middlewares.append(bearer_token(token))
    middlewares.append(trailing_slash)
    app = web.Application(middlewares=middlewares, client_max_size=max_body)
    app[EVALUATOR] = evaluator
    app[MAX_BODY] = max_body
    for path in ("/v1/data", "/v1/data/{path:.*}"):
        app.router.add_get(path, v1_data, allow_head=False)
        app.router.add_post(path, v1_data)
    for path in ("/v0/data", "/v0/data/{path:.*}"):
        app.router.add_post(path, v0_data)
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_get("/health/{rule:.+}", health_rule, allow_head=False)
    return app
