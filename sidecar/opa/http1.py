"""A minimal HTTP/1.1 client for one kind of exchange: POST a small JSON body,
read one bounded response. Keep-alive connections are pooled; nothing is ever
retried or redirected, so each call puts exactly one request on the wire.

Written here rather than taken from an HTTP library because the hot path needs
what common clients make hard or slow together: a hard cap on the response
while it is read, no retry or redirect machinery at all, a connection that is
dropped the moment it holds bytes nobody asked for (a stale extra response
must never answer the next check), and low per-call cost (see bench/).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

_MAX_HEADER_BYTES = 65536
_MAX_IDLE_SECONDS = 30.0  # below common server idle timeouts; OPA has none
# A pooled connection not taken for this long is closed: more were open than the load
# still needs (a burst is over). Each is a socket here and a goroutine with buffers in OPA.
IDLE_TIMEOUT_SECONDS = 5.0
# The newest few idle connections outlive it (until _MAX_IDLE_SECONDS, checked when
# taken), so a sidecar asked every few seconds does not reconnect, or redo TLS, per check.
KEEP_IDLE = 4
_SINGLE_HEADERS = frozenset({"content-length", "content-type", "content-encoding", "transfer-encoding"})


class TransportError(Exception):
    """Connecting, writing or reading failed, or the peer closed before answering."""


class ProtocolError(Exception):
    """The peer's bytes are not one well-formed, bounded HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: a TCP host and port, or a unix socket path; TLS optional,
    with a fixed context or one asked for at each new connection (rotating files)."""

    host: str
    port: int
    unix_path: str | None = None
    ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None

    def current_ssl_context(self) -> ssl.SSLContext | None:
        context = self.ssl_context
        return context if context is None or isinstance(context, ssl.SSLContext) else context()

    @property
    def host_header(self) -> str:
        if self.unix_path is not None:
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(slots=True)
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.ssl_context: ssl.SSLContext | None = None  # what its handshake used
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._response = Response()
        self._max_body = 0
        self._header_bytes = 0
        self._keep_alive = False
        self._done = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport by construction (create_connection); other event
        # loops' transports need not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._done:
            # Bytes nobody asked for: the connection can no longer be trusted.
            self._fail(ProtocolError("unexpected data from the server"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, ProtocolError) else ProtocolError("malformed response"))
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed response ({exc})"))

    def eof_received(self) -> bool:
        if self._parser is not None and not self._done:
            started = self._response.status or self._header_bytes or self._response.body
            self._fail(
                ProtocolError("connection closed mid-response")
                if started
                else TransportError("connection closed before a response")
            )
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self._done:
            self._fail(TransportError(f"connection lost ({type(exc).__name__ if exc else 'closed'})"))

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self._done:
            # A second response to one request (pipelined in the same read):
            # it must not touch the answer already handed over.
            raise ProtocolError("unexpected extra response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise ProtocolError("response headers too large")
        key = name.decode("latin-1").lower()
        headers = self._response.headers
        if key in headers:
            if key in _SINGLE_HEADERS:
                raise ProtocolError(f"repeated {key} header")
            headers[key] += ", " + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._response.status = self._parser.get_status_code()
        self._keep_alive = bool(self._parser.should_keep_alive())
        headers = self._response.headers
        if "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", ""):
            if self._response.status == 200:
                # A body delimited by close cannot be told apart from a truncated one.
                raise ProtocolError("response has neither content-length nor chunked encoding")
            # Any other status is a failure whatever its body says: stop here.
            self._keep_alive = False
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        if len(self._response.body) + len(body) > self._max_body:
            raise ProtocolError(f"response body over {self._max_body} bytes")
        self._response.body += body

    def on_message_complete(self) -> None:
        self._done = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(self._response)

    # -- exchange

    def _fail(self, exc: Exception) -> None:
        self._done = True
        self._keep_alive = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def usable(self, now: float) -> bool:
        return not self.closed and now - self.idle_since < _MAX_IDLE_SECONDS

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes, max_body: int) -> tuple[Response, bool]:
        """Write one request, wait for its response; returns it and whether the
        connection may carry another exchange."""
        assert self.transport is not None
        self._response = Response()
        self._max_body = max_body
        self._header_bytes = 0
        self._keep_alive = False
        self._done = False
        self._waiter = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)
        try:
            response = await self._waiter
        finally:
            self._waiter = None
        return response, self._keep_alive and not self.closed


class ConnectionPool:
    """Idle keep-alive connections to one endpoint; a request takes the most recently used.

    Taking the most recent one keeps steady load on the same few connections, so those
    a burst opened beyond them stay idle, oldest first in the queue. A timer, armed only
    while idle connections exist, closes those idle for ``idle_timeout`` seconds but the
    newest KEEP_IDLE: one callback every quarter of that at most, never anything per request.
    """

    def __init__(
        self, endpoint: Endpoint, max_idle: int = 256, idle_timeout: float = IDLE_TIMEOUT_SECONDS
    ) -> None:
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be positive")
        self.endpoint = endpoint
        self._idle: deque[_Connection] = deque()  # idle_since ascending: released at the right
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def _connect(self, context: ssl.SSLContext | None) -> _Connection:
        ep = self.endpoint
        loop = asyncio.get_running_loop()
        try:
            if ep.unix_path is not None:
                _, conn = await loop.create_unix_connection(
                    _Connection,
                    ep.unix_path,
                    ssl=context,
                    server_hostname="localhost" if context else None,
                )
            else:
                _, conn = await loop.create_connection(_Connection, ep.host, ep.port, ssl=context)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot connect ({type(exc).__name__})") from None
        conn.ssl_context = context
        return conn

    async def request(self, request: bytes, max_body: int) -> Response:
        """Send one complete request and read its response.

        The caller bounds the time (asyncio.timeout); after any error or
        cancellation the connection is closed, never reused.
        """
        conn = await self._acquire()
        reusable = False
        try:
            response, reusable = await conn.exchange(request, max_body)
            return response
        finally:
            if reusable:
                self._release(conn)
            else:
                conn.close()

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        context = self.endpoint.current_ssl_context()
        while self._idle:
            conn = self._idle.pop()
            # After a rotation a connection made with the old material is closed
            # rather than reused: only checks already on one finish with it.
            if conn.usable(now) and conn.ssl_context is context:
                return conn
            conn.close()
        return await self._connect(context)

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if self._sweep_timer is None:
            self._sweep_timer = asyncio.get_running_loop().call_later(self._idle_timeout, self._sweep)

    def _sweep(self) -> None:
        self._sweep_timer = None
        idle = self._idle
        stale = time.monotonic() - self._idle_timeout
        while len(idle) > KEEP_IDLE and idle[0].idle_since <= stale:
            idle.popleft().close()
        if len(idle) > KEEP_IDLE:
            # Next when the oldest left turns stale, but no sooner than a quarter of
            # the timeout, so that steady load costs a few callbacks per timeout.
            delay = max(idle[0].idle_since - stale, self._idle_timeout / 4)
            self._sweep_timer = asyncio.get_running_loop().call_later(delay, self._sweep)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Close the idle connections and the timer; a connection in use is closed when
        its exchange ends."""
        self._closed = True
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        while self._idle:
            self._idle.pop().close()
