"""An HTTP listener whose connections all answer requests: the next ones are
taken beyond the cap (up to as many again), and only past those is one closed
unanswered, and counted."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from sidecar.config import ListenAddress
from sidecar.http_limits import HttpLimits
from sidecar.http_listener import HttpListener
from sidecar.http_refusal import PlainRefuser
from tests.hostile.raw_http import read_answer

CAP = 2
LIMITS = HttpLimits(
    max_header_bytes=4096,
    max_headers=16,
    max_body_bytes=0,
    max_connections=CAP,
    over_cap_connections=CAP,
    header_timeout=5.0,
    body_timeout=5.0,
    idle_timeout=5.0,
)


class HeldListener:
    """A listener whose one route answers only once released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.unanswered = 0
        self.waiting = 0  # requests the route holds
        app = web.Application()
        app.router.add_get("/held", self._held)
        self.listener = HttpListener(
            ListenAddress("127.0.0.1", 0), app, LIMITS, PlainRefuser(), unanswered=self._count
        )

    async def _held(self, _request: web.Request) -> web.Response:
        self.waiting += 1
        await self.release.wait()
        return web.Response(text="done")

    def answering(self, n: int) -> bool:
        """Whether exactly `n` connections are taken, each with its request held."""
        taken = len(self.listener.connections) + len(self.listener.beyond_cap)
        return taken == n and self.waiting == n

    def _count(self) -> None:
        self.unanswered += 1


@pytest.fixture
async def held() -> AsyncIterator[HeldListener]:
    listener = HeldListener()
    await listener.listener.start()
    yield listener
    listener.release.set()
    await listener.listener.stop()


async def _busy_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /held HTTP/1.1\r\nhost: a\r\n\r\n")
    return sock


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_past_the_cap_and_as_many_again_a_connection_is_closed_unanswered_and_counted(
    held: HeldListener,
) -> None:
    port = held.listener.port
    busy: list[socket.socket] = []
    try:
        for n in range(1, 2 * CAP + 1):  # one at a time: each is answering before the next comes
            busy.append(await _busy_connection(port))
            await _until(functools.partial(held.answering, n), f"connection {n} answering")
        assert (len(held.listener.connections), len(held.listener.beyond_cap)) == (CAP, CAP)
        assert held.unanswered == 0

        extra = await _busy_connection(port)
        await _until(lambda: held.unanswered == 1, "the next one counted")
        answer = await asyncio.to_thread(read_answer, extra, 2.0)
        assert answer.status == 0  # closed, no answer
        extra.close()

        held.release.set()
        answers = [await asyncio.to_thread(read_answer, sock, 5.0) for sock in busy]
        assert [a.status for a in answers] == [200] * (2 * CAP)
    finally:
        for sock in busy:
            sock.close()
