"""The HTTP listeners' connections: aiohttp's request handler with the limits
aiohttp does not have (a deadline for the headers, a byte budget for all of a
request's head, a connection cap) and with refusals that quote nothing.

aiohttp answers a request it cannot parse itself, with the parser's message
(which quotes the offending bytes: a token, say) in the body and in an error
log line. Here every such refusal goes through a ``Refuser``: on the
authorization listener a recorded deny, never a word of the request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from sidecar.errors import describe
from sidecar.http_limits import HttpLimits
from sidecar.http_refusal import BAD_REQUEST, HEADERS_TOO_LARGE, TIMEOUT, Refusal, Refuser

log = logging.getLogger("sidecar.http")


class Phase(enum.Enum):
    NEW = "new"  # connected, nothing received yet
    HEAD = "head"  # receiving a request's line and headers
    BODY = "body"  # headers complete, its body being read (sidecar/http_admission.py)
    BUSY = "busy"  # headers complete: handler, response
    IDLE = "idle"  # kept alive between requests


# Evicted first when the cap is reached: connections that have not finished
# sending a request's head (the slow client's), then those whose body is still
# arriving (the request is refused, a deny), then idle ones (closing one as a
# proxy reuses it is an error to the proxy, which a fail-open Envoy lets
# through); within each, the one that has served the fewest requests (a
# proxy's pooled connection has served many), then the oldest.
_EVICTION_ORDER = {Phase.NEW: 0, Phase.HEAD: 0, Phase.BODY: 1, Phase.IDLE: 2}
# A proxy sends a buffered body with its headers, so it is whole within a few
# turns of the loop; a body still arriving this long after its headers is a
# slow client's, and only then may the cap take its connection.
BODY_GRACE_S = 0.05


def _rank(conn: GuardedRequestHandler) -> tuple[int, int, float]:
    return _EVICTION_ORDER[conn.phase], conn.served, conn.phase_since


class ConnectionTable:
    """At most ``cap`` connections. A connection over the cap evicts one that
    is not answering a request it has whole, so a client holding many idle or
    half-sent connections cannot lock Envoy (or the kubelet) out; when every
    connection is busy with a whole request (or a body within its grace), the
    newcomer is not admitted."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._open: dict[GuardedRequestHandler, None] = {}  # insertion order: oldest first
        self.evicted = 0
        self.turned_away = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: GuardedRequestHandler, now: float) -> bool:
        victim = None
        if len(self._open) >= self._cap:
            victim = self._eviction_candidate(now)
            if victim is None:
                self.turned_away += 1
                return False
            self.evicted += 1
            self.leave(victim)  # gone now, though its close completes later
        self._open[conn] = None
        if victim is not None:
            # After the newcomer is in: connection_made must not raise, or the
            # newcomer would never be read (nor answered, nor closed).
            try:
                victim.evict()
            except Exception as exc:
                log.error("evicting an HTTP connection failed, closing it: %s", describe(exc))
                victim.force_close()
        return True

    def leave(self, conn: GuardedRequestHandler) -> None:
        self._open.pop(conn, None)

    def _eviction_candidate(self, now: float) -> GuardedRequestHandler | None:
        body_settled = now - BODY_GRACE_S
        candidates = [
            c
            for c in self._open
            if c.phase in _EVICTION_ORDER and (c.phase is not Phase.BODY or c.phase_since <= body_settled)
        ]
        if not candidates:
            return None
        return min(candidates, key=_rank)


def _refusal_for(exc: BaseException | None, limits: HttpLimits) -> tuple[int, str]:
    """Status and detail for what aiohttp's parser refused; the exception's
    message quotes the request, so only its type is used."""
    if isinstance(exc, LineTooLong):
        return HEADERS_TOO_LARGE, f"request line or a header over {limits.max_header_bytes} bytes"
    if isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
        return HEADERS_TOO_LARGE, f"more than {limits.max_headers} headers"
    kind = type(exc).__name__ if exc is not None else "unknown"
    return BAD_REQUEST, f"malformed HTTP request ({kind})"


class GuardedRequestHandler(web.RequestHandler):
    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        limits: HttpLimits,
        table: ConnectionTable,
        overflow: ConnectionTable,
        refuser: Refuser,
        unanswered: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=limits.idle_timeout,
            logger=log,
            access_log=None,  # type: ignore[arg-type]  # None turns aiohttp's access log off
            max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers,
            # Bytes left unread after an answer are drained this long at most.
            lingering_time=min(limits.body_timeout, 1.0),
            # The body reaches the policy as Envoy forwards it, not inflated.
            auto_decompress=False,
            **kwargs,
        )
        self._limits = limits
        self._table = table
        self._overflow = overflow  # taken beyond the cap, to be answered overloaded
        self.beyond_cap = False
        self._unanswered = unanswered
        self._refuser = refuser
        self._loop_ref = loop
        self.phase = Phase.NEW
        self.phase_since = loop.time()
        self._head_bytes = 0  # head bytes of the request being received
        self._busy_bytes = 0  # bytes received while a request is in hand
        self._deadline: asyncio.TimerHandle | None = None
        self._body_read: asyncio.Timeout | None = None
        self.evicted_reading_body = False

    @property
    def served(self) -> int:
        """Requests received on this connection so far."""
        return self._request_count

    # -- connection lifetime

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        now = self._loop_ref.time()
        if not self._table.admit(self, now):
            # Every connection at the cap is answering a whole request.
            if not self._overflow.admit(self, now):
                self._unanswered()
                self.force_close()
                return
            self.beyond_cap = True
        self._arm(self._limits.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._table.leave(self)
        self._overflow.leave(self)
        self._disarm()
        super().connection_lost(exc)

    def evict(self) -> None:
        if self.phase is Phase.HEAD:
            self._refuse(TIMEOUT, "connection evicted at the connection cap before its headers were complete")
        elif self.phase is Phase.BODY:
            # The body's read ends now, its reader refuses the request, and the
            # connection closes after that answer instead of reading on for the
            # rest of the body: it no longer counts at the cap.
            self._lingering_time = 0.0
            scope = self._body_read
            if scope is not None and not scope.expired():  # else its own timeout ends it
                self.evicted_reading_body = True
                scope.reschedule(self._loop_ref.time())
        else:
            self.force_close()

    # -- the body, read by the admission middleware

    def reading_body(self, scope: asyncio.Timeout) -> None:
        """The body is being read within `scope`, which eviction ends."""
        self._body_read = scope
        self._enter(Phase.BODY)

    def body_done(self) -> None:
        self._body_read = None
        if self.phase is Phase.BODY:
            self._enter(Phase.BUSY)

    # -- reading

    def data_received(self, data: bytes) -> None:
        if self.transport is None or not data:
            return
        if self.phase in (Phase.NEW, Phase.IDLE):
            if self.phase is Phase.IDLE:
                self._arm(self._limits.header_timeout)
            self._enter(Phase.HEAD)
            self._head_bytes = 0
        if self.phase is Phase.HEAD:
            self._head_bytes += len(data)
        else:
            # The rest of the body, then at most one pipelined head.
            self._busy_bytes += len(data)
            if self._busy_bytes > 2 * self._limits.max_body_bytes + self._limits.max_header_bytes + 4096:
                self.force_close()
                return
        requests_before = self._request_count
        try:
            super().data_received(data)
        except Exception as exc:  # aiohttp catches its parser's errors; anything else ends the connection
            log.debug("HTTP connection closed: %s", describe(exc))
            self.force_close()
            return
        if self.phase is not Phase.HEAD or self.transport is None:
            return
        if self._request_count > requests_before:
            self._disarm()
            self._busy_bytes = 0
            self._enter(Phase.BUSY)
        elif self._head_bytes > self._limits.max_header_bytes:
            # Many lines each under the parser's per-line limit.
            self._refuse(HEADERS_TOO_LARGE, f"request headers over {self._limits.max_header_bytes} bytes")

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._enter(Phase.IDLE)

    # -- refusals and logs

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("HTTP request failed: %s", describe(exc) if exc else "unknown error")
            refusal = self._refuser.fail("request handler failed")
        else:
            refusal = self._refuser.refuse(*_refusal_for(exc, self._limits))
        return refusal.response()

    def log_debug(self, *args: Any, **kw: Any) -> None:
        # aiohttp's own debug lines may carry a parser error quoting the request.
        pass

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        log.error("HTTP connection error: %s", describe(exc) if isinstance(exc, BaseException) else "unknown")

    # -- helpers

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self.phase_since = self._loop_ref.time()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self._loop_ref.call_later(seconds, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.phase is Phase.HEAD:
            self._refuse(TIMEOUT, f"request headers not complete within {self._limits.header_timeout:g} s")
        elif self.phase is Phase.NEW:
            self.force_close()  # nothing was asked, so there is nothing to answer

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a request no handler will see, then close."""
        refusal: Refusal = self._refuser.refuse(status, detail)
        if self.transport is not None:
            self.transport.write(refusal.raw())
        self.force_close()
