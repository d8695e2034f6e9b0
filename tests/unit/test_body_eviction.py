"""Evicting a connection whose body is being read, at every moment of that read.

The eviction runs inside the newcomer's connection_made; if it raised there,
the newcomer would never be read. The body's own timeout may have fired a
moment before (its scope expiring, the reading task not yet resumed): then
the read is ending anyway, as a timeout, and the eviction must leave it so.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from sidecar.http_guard import ConnectionTable, GuardedRequestHandler, Phase
from sidecar.http_limits import HttpLimits
from sidecar.http_refusal import PlainRefuser

LIMITS = HttpLimits(
    max_header_bytes=4096,
    max_headers=16,
    max_body_bytes=2048,
    max_connections=1,
    over_cap_connections=0,
    header_timeout=1.0,
    body_timeout=1.0,
    idle_timeout=1.0,
)


async def _unused(request: web.BaseRequest) -> web.StreamResponse:
    raise AssertionError("no request is served here")


def _handler() -> GuardedRequestHandler:
    server = web.Server(_unused)
    loop = asyncio.get_running_loop()
    return GuardedRequestHandler(
        server,
        loop=loop,
        limits=LIMITS,
        table=ConnectionTable(1),
        overflow=ConnectionTable(0),
        refuser=PlainRefuser(),
        unanswered=lambda: None,
    )


def _evict(conn: GuardedRequestHandler, raised: list[BaseException]) -> None:
    try:
        conn.evict()
    except Exception as exc:
        raised.append(exc)


async def test_eviction_ends_a_body_read_in_progress() -> None:
    conn, raised = _handler(), list[BaseException]()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10) as scope:
            conn.reading_body(scope)
            assert conn.phase is Phase.BODY
            loop.call_soon(_evict, conn, raised)
            await asyncio.sleep(5)
    assert raised == []
    assert conn.evicted_reading_body


async def test_eviction_just_after_the_bodys_own_timeout_leaves_it_a_timeout() -> None:
    conn, raised = _handler(), list[BaseException]()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10) as scope:
            conn.reading_body(scope)
            scope.reschedule(loop.time() - 1)  # its timeout fires on the next turn...
            loop.call_soon(_evict, conn, raised)  # ...and the eviction comes right after
            await asyncio.sleep(5)
    assert raised == []
    assert not conn.evicted_reading_body  # refused as late, which it was
