"""The OPA transport: its protocol object, fed bytes directly so each case is exact,
and its connection pool against a local server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sidecar.opa.http1 import (
    IDLE_TIMEOUT_SECONDS,
    KEEP_IDLE,
    ConnectionPool,
    Endpoint,
    ProtocolError,
    Response,
    TransportError,
    _Connection,
)

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"result":true}\n'


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


async def exchange(*chunks: bytes, eof: bool = False) -> tuple[Response, bool, _Transport]:
    conn = _Connection()
    transport = _Transport()
    conn.transport = transport  # type: ignore[assignment]
    pending = asyncio.ensure_future(conn.exchange(b"POST / HTTP/1.1\r\n\r\n", 1 << 20))
    await asyncio.sleep(0)
    for chunk in chunks:
        conn.data_received(chunk)
    if eof:
        conn.eof_received()
    response, reusable = await pending
    return response, reusable, transport


async def test_one_response_keeps_the_connection() -> None:
    response, reusable, transport = await exchange(OK[:30], OK[30:])
    assert (response.status, bytes(response.body), reusable, transport.closed) == (
        200,
        b'{"result":true}\n',
        True,
        False,
    )


@pytest.mark.parametrize(
    "spare",
    [
        b'HTTP/1.1 200 OK\r\nX-Spare: 1\r\n\r\n{"result":false}\n',  # no framing: would append its body
        OK,
    ],
)
async def test_a_spare_response_in_the_same_read_leaves_the_answer_intact_and_drops_the_connection(
    spare: bytes,
) -> None:
    response, reusable, transport = await exchange(OK + spare)
    assert bytes(response.body) == b'{"result":true}\n'
    assert "x-spare" not in response.headers
    assert (reusable, transport.closed) == (False, True)


async def test_eof_mid_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        await exchange(OK[:-5], eof=True)


async def test_eof_before_any_byte_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        await exchange(eof=True)


async def test_a_200_without_length_framing_is_refused() -> None:
    with pytest.raises(ProtocolError):
        await exchange(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"result":true}', eof=True)


# -- the pool


class _Server:
    """Answers OK to each request; counts connections. While ``hold`` is clear the
    answers wait, so that a burst's exchanges are all in flight at once."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.waiting = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                self.waiting += 1
                await self.hold.wait()
                self.waiting -= 1
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            self.writers.discard(writer)
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[_Server, Endpoint]]:
    state = _Server()
    listener = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield state, Endpoint("127.0.0.1", port)
    finally:
        listener.close()
        state.hold.set()
        for writer in list(state.writers):  # a failed test's connections: end their handlers
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                while state.open:
                    await asyncio.sleep(0.01)
                await listener.wait_closed()


REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def burst(pool: ConnectionPool, state: _Server, n: int) -> None:
    """``n`` exchanges in flight at once, so ``n`` connections, all released together."""
    state.hold.clear()
    calls = [asyncio.ensure_future(pool.request(REQUEST, 1 << 20)) for _ in range(n)]
    async with asyncio.timeout(10):
        while state.waiting < n:
            await asyncio.sleep(0.01)
    state.hold.set()
    for response in await asyncio.gather(*calls):
        assert response.status == 200
    assert (pool.idle_count, state.accepted) == (n, n)


async def seconds_until(condition: Callable[[], bool], limit: float) -> float:
    started = time.monotonic()
    while not condition() and time.monotonic() - started < limit:
        await asyncio.sleep(0.02)
    assert condition(), f"not within {limit} s"
    return time.monotonic() - started


# The pool closes a connection idle for its timeout, sweeping at most every quarter of
# it; the rest is room for a shared machine's scheduling.
def bound(idle_timeout: float) -> float:
    return idle_timeout * 1.25 + 1.0


async def test_after_a_burst_the_idle_connections_close_within_the_stated_time(
    server: tuple[_Server, Endpoint],
) -> None:
    state, endpoint = server
    pool = ConnectionPool(endpoint)  # the defaults the sidecar runs with
    await burst(pool, state, 32)
    await asyncio.sleep(IDLE_TIMEOUT_SECONDS / 2)
    assert pool.idle_count == 32  # not before their time
    await seconds_until(
        lambda: pool.idle_count == KEEP_IDLE and state.open == KEEP_IDLE, bound(IDLE_TIMEOUT_SECONDS)
    )
    pool.close()


async def test_sparse_checks_after_a_burst_reuse_a_kept_connection(server: tuple[_Server, Endpoint]) -> None:
    # A check every few timeouts finds one of the newest connections still open:
    # no reconnection (and no TLS handshake) per check.
    state, endpoint = server
    idle_timeout = 0.2
    pool = ConnectionPool(endpoint, idle_timeout=idle_timeout)
    await burst(pool, state, 16)
    for _ in range(4):
        await asyncio.sleep(3 * idle_timeout)
        assert (await pool.request(REQUEST, 1 << 20)).status == 200
    assert state.accepted == 16
    assert pool.idle_count == KEEP_IDLE
    await seconds_until(lambda: state.open == KEEP_IDLE, bound(idle_timeout))
    pool.close()


async def test_steady_load_after_a_burst_keeps_its_connections_and_the_rest_close(
    server: tuple[_Server, Endpoint],
) -> None:
    state, endpoint = server
    idle_timeout = 0.4
    pool = ConnectionPool(endpoint, idle_timeout=idle_timeout)
    await burst(pool, state, 64)
    stop = asyncio.Event()
    checks = 0

    async def load() -> None:
        nonlocal checks
        while not stop.is_set():
            response = await pool.request(REQUEST, 1 << 20)
            assert response.status == 200
            checks += 1
            await asyncio.sleep(0.01)

    workers = [asyncio.ensure_future(load()) for _ in range(2)]
    try:
        # The burst's spare connections close; the newest few (the load's among them) stay.
        await seconds_until(lambda: state.open <= KEEP_IDLE, bound(idle_timeout))
        await asyncio.sleep(3 * idle_timeout)  # several sweeps under load
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert checks > 50
    assert state.accepted == 64  # not one reconnection: every check reused a connection
    assert pool.idle_count <= KEEP_IDLE
    pool.close()


async def test_a_closed_pool_stops_its_timer_and_keeps_nothing(
    server: tuple[_Server, Endpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = server
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    call_later = loop.call_later

    def recording(delay: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        handle = call_later(delay, callback, *args)
        if getattr(callback, "__self__", None) is pool:
            timers.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_later", recording)
    pool = ConnectionPool(endpoint, idle_timeout=0.2)
    await burst(pool, state, 4)
    assert len(timers) == 1  # one timer for the pool, not one per connection
    # An exchange still running when the pool closes gives its connection back after.
    state.hold.clear()
    late: Awaitable[Response] = asyncio.ensure_future(pool.request(REQUEST, 1 << 20))
    await seconds_until(lambda: state.waiting == 1, 5)
    pool.close()
    assert timers[0].cancelled()
    state.hold.set()
    assert (await late).status == 200
    assert (pool.idle_count, len(timers)) == (0, 1)
    await seconds_until(lambda: state.open == 0, 2)
