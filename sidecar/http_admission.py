"""Reading a request's body before its handler runs: bounded in size and time,
and parsed one large body per turn of the event loop.

The handlers (sidecar/http_authz.py) then read the body aiohttp keeps, so
what reaches them is complete and within the limits, and everything else has
been answered with a recorded refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from sidecar.http_guard import GuardedRequestHandler
from sidecar.http_limits import HttpLimits
from sidecar.http_refusal import BAD_REQUEST, HEADERS_TOO_LARGE, TIMEOUT, TOO_LARGE, Refuser

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Parsing a body this small costs microseconds; only larger ones queue for a turn.
SMALL_BODY_BYTES = 4096


class LoopTurns:
    """One large body per loop turn. A body's parse runs on the event loop
    in one piece (a few ms at the size limit); many arriving at once would
    otherwise run back to back in one turn and hold every gRPC check and
    every timer for their sum."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        await self._lock.acquire()
        # Released on the next turn, after the holder's parse has run.
        asyncio.get_running_loop().call_soon(self._lock.release)


def head_size(request: web.BaseRequest) -> int:
    """The request line and header lines as sent (near enough: separators counted)."""
    line = len(request.method) + len(request.raw_path) + 11
    return line + sum(len(name) + len(value) + 4 for name, value in request.raw_headers)


def head_limit(limits: HttpLimits, refuser: Refuser) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The total of a head that arrived in one piece (the connection counts a
    head that arrives in many, sidecar/http_guard.py)."""

    @web.middleware
    async def within(request: web.Request, handler: Handler) -> web.StreamResponse:
        if head_size(request) > limits.max_header_bytes:
            detail = f"request headers over {limits.max_header_bytes} bytes"
            return refuser.refuse(HEADERS_TOO_LARGE, detail).response()
        return await handler(request)

    return within


EVICTED = "connection evicted at the connection cap before its body was complete"


def _evicted(conn: GuardedRequestHandler | None) -> bool:
    return conn is not None and conn.evicted_reading_body


def admission(
    limits: HttpLimits, refuser: Refuser, turns: LoopTurns
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        limit = limits.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            return refuser.refuse(TOO_LARGE, f"body over {limit} bytes").response()
        # The connection's eviction at the cap ends the body's read (http_guard.py).
        conn = request.protocol if isinstance(request.protocol, GuardedRequestHandler) else None
        try:
            async with asyncio.timeout(limits.body_timeout) as scope:
                if conn is not None:
                    conn.reading_body(scope)
                body = await request.read()
        except TimeoutError:
            detail = f"body not complete within {limits.body_timeout:g} s"
            return refuser.refuse(TIMEOUT, EVICTED if _evicted(conn) else detail).response()
        except web.HTTPRequestEntityTooLarge:
            return refuser.refuse(TOO_LARGE, f"body over {limit} bytes").response()
        except (HttpProcessingError, RequestPayloadError, ConnectionError) as exc:
            detail = f"body not read ({type(exc).__name__})"
            return refuser.refuse(BAD_REQUEST, detail).response()
        finally:
            if conn is not None:
                conn.body_done()
        if _evicted(conn):  # the body was complete as the eviction came: still refused
            return refuser.refuse(TIMEOUT, EVICTED).response()
        if conn is not None and conn.beyond_cap:
            detail = f"over {limits.max_connections} connections, each answering a request"
            return refuser.overloaded(detail).response()
        if len(body) > SMALL_BODY_BYTES:
            await turns.take()
        return await handler(request)

    return admit
