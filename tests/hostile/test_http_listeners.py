"""The HTTP listeners against clients that break the rules: every request on
the authorization listener gets a recorded 4xx deny, slow and numerous
clients are cut off in time, and the probes answer whatever happens there."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidecar.config import ListenAddress
from sidecar.http_refusal import Refusal
from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.hostile.raw_http import RawAnswer, connect, exchange, read_answer

DECISION_HEADER = "x-opa-sidecar-decision-id"
LIMITS: dict[str, Any] = {
    "http_max_header_bytes": 4096,
    "http_max_headers": 16,
    "http_max_body_bytes": 2048,
    "http_max_connections": 8,
    "http_header_timeout": 0.3,
    "http_body_timeout": 0.3,
    "http_idle_timeout": 0.6,
}


@pytest.fixture
async def sidecar(fault_opa: FaultOpa) -> AsyncIterator[SidecarHandle]:
    fault_opa.set(Behaviour.json({"result": True}))
    async with running_sidecar(fault_opa.url, **LIMITS) as handle:
        yield handle


def authz(handle: SidecarHandle) -> tuple[str, int]:
    return ("127.0.0.1", handle.sidecar.http.port)


def probes(handle: SidecarHandle) -> tuple[str, int]:
    return ("127.0.0.1", handle.sidecar.probes.port)


def head(target: str = "/ext_authz/orders", *lines: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {target} HTTP/1.1", "host: app", *lines, "", ""]).encode()


REFUSED = [
    pytest.param(head("/ext_authz/x", *(f"x-h{i}: v" for i in range(20))), 431, id="too-many-headers"),
    pytest.param(head("/ext_authz/x", "authorization: Bearer " + "t" * 5000), 431, id="header-too-long"),
    pytest.param(
        head("/ext_authz/x", *(f"x-h{i}: {'v' * 400}" for i in range(12))), 431, id="head-over-total"
    ),
    pytest.param(head("/ext_authz/" + "p" * 5000), 431, id="request-line-too-long"),
    pytest.param(b"GET /ext_authz/x HTTP/1.1 extra\r\nhost: a\r\n\r\n", 400, id="bad-request-line"),
    pytest.param(head("/ext_authz/x", "x-h: a\x01b"), 400, id="control-char-in-header"),
    pytest.param(
        head("/ext_authz/x", "transfer-encoding: chunked", method="POST") + b"zz\r\nhello\r\n0\r\n\r\n",
        400,
        id="bad-chunked-body",
    ),
    pytest.param(
        head("/ext_authz/x", "content-length: 1", "content-length: 2", method="POST") + b"ab",
        400,
        id="two-content-lengths",
    ),
    pytest.param(
        head("/v1/check", "content-length: 4096", method="POST") + b"{" * 4096, 413, id="json-over-limit"
    ),
    pytest.param(
        head("/ext_authz/x", "transfer-encoding: chunked", method="POST")
        + b"1000\r\n"
        + b"a" * 4096
        + b"\r\n0\r\n\r\n",
        413,
        id="chunked-over-limit",
    ),
]


@pytest.mark.parametrize(("request_bytes", "status"), REFUSED)
async def test_a_refused_request_is_a_recorded_deny(
    sidecar: SidecarHandle, fault_opa: FaultOpa, request_bytes: bytes, status: int
) -> None:
    answer = await asyncio.to_thread(exchange, authz(sidecar), request_bytes)
    assert answer.status == status
    decision_id = answer.headers[DECISION_HEADER]
    [decision] = [d for d in sidecar.decisions() if d["decision_id"] == decision_id]
    assert (decision["outcome"], decision["reason"], decision["http_status"]) == (
        "deny",
        "bad_request",
        status,
    )
    assert not [r for r in fault_opa.requests if r.method == "POST"]  # OPA was not asked


async def test_requests_within_the_limits_are_checked(sidecar: SidecarHandle, fault_opa: FaultOpa) -> None:
    body = b'{"tool": "search", "pad": "' + b"a" * 1800 + b'"}'
    request = head(
        "/v1/check", f"content-length: {len(body)}", *(f"x-h{i}: v" for i in range(10)), method="POST"
    )
    answer = await asyncio.to_thread(exchange, authz(sidecar), request + body)
    assert answer.status == 200
    assert sidecar.decisions()[-1]["outcome"] == "allow"


async def test_slow_headers_are_refused_at_the_header_timeout(sidecar: SidecarHandle) -> None:
    def half_a_head() -> RawAnswer:
        with connect(authz(sidecar)) as sock:
            sock.sendall(b"GET /ext_authz/x HTTP/1.1\r\nhost: a\r\nx-slow: ")
            return read_answer(sock, timeout=3)

    answer = await asyncio.to_thread(half_a_head)
    assert answer.status == 408
    assert 0.2 < answer.seconds < 1.5
    assert sidecar.decisions()[-1]["decision_id"] == answer.headers[DECISION_HEADER]


async def test_a_slow_body_is_refused_at_the_body_timeout(sidecar: SidecarHandle) -> None:
    def half_a_body() -> RawAnswer:
        with connect(authz(sidecar)) as sock:
            sock.sendall(head("/v1/check", "content-length: 100", method="POST") + b'{"a": ')
            return read_answer(sock, timeout=3)

    answer = await asyncio.to_thread(half_a_body)
    assert answer.status == 408
    assert answer.seconds < 1.5
    decision = sidecar.decisions()[-1]
    assert (decision["decision_id"], decision["http_status"]) == (answer.headers[DECISION_HEADER], 408)


async def test_a_silent_connection_is_closed(sidecar: SidecarHandle) -> None:
    def silent() -> RawAnswer:
        with connect(authz(sidecar)) as sock:
            return read_answer(sock, timeout=3)

    answer = await asyncio.to_thread(silent)
    assert (answer.status, answer.seconds < 1.5) == (0, True)
    assert sidecar.decisions() == []  # nothing was asked


async def test_an_idle_kept_alive_connection_is_closed(sidecar: SidecarHandle) -> None:
    def idle_after_one() -> tuple[RawAnswer, RawAnswer]:
        with connect(probes(sidecar)) as sock:
            sock.sendall(head("/healthz"))
            first = read_answer(sock)
            return first, read_answer(sock, timeout=3)

    first, after = await asyncio.to_thread(idle_after_one)
    assert first.status == 200
    assert (after.status, after.seconds < 1.5) == (0, True)


async def test_slow_clients_at_the_cap_give_way_and_probes_answer(sidecar: SidecarHandle) -> None:
    """Twice the cap of half-sent requests on each listener: each newcomer evicts
    the oldest of them, and checks and probes keep being answered."""
    cap = LIMITS["http_max_connections"]

    def hold_and_ask() -> tuple[list[int], list[int], int]:
        held: list[socket.socket] = []
        try:
            for target in (authz(sidecar), probes(sidecar)):
                for _ in range(2 * cap):
                    sock = connect(target)
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: a\r\n")
                    held.append(sock)
            checks = [exchange(authz(sidecar), head("/ext_authz/orders")).status for _ in range(3)]
            health = [exchange(probes(sidecar), head("/healthz")).status for _ in range(3)]
            return checks, health, len(held)
        finally:
            for sock in held:
                sock.close()

    checks, health, held = await asyncio.to_thread(hold_and_ask)
    assert held == 4 * cap
    assert checks == [200] * 3
    assert health == [200] * 3
    assert len(sidecar.sidecar.http.connections) <= cap
    assert len(sidecar.sidecar.http.beyond_cap) == 0  # evictable ones were there to take
    assert sidecar.sidecar.http.connections.evicted >= cap


async def test_slow_bodies_at_the_cap_give_way_each_as_a_recorded_deny(fault_opa: FaultOpa) -> None:
    """A request whose headers are complete but whose body trickles in holds its
    connection until the body timeout. At the cap a newcomer evicts the oldest
    such request, answered 408, recorded, and closed at once (it no longer
    counts at the cap), so a client holding bodies cannot lock Envoy out (a
    connection turned away is an error a fail-open Envoy lets through)."""
    fault_opa.set(Behaviour.json({"result": True}))
    cap, body_timeout = LIMITS["http_max_connections"], 2.0
    body_head = head("/v1/check", "content-length: 100", "content-type: application/json", method="POST")

    def hold_then_ask(handle: SidecarHandle) -> tuple[RawAnswer, RawAnswer, float, float]:
        held: list[socket.socket] = []
        try:
            started = time.monotonic()
            for _ in range(cap):
                sock = connect(authz(handle))
                sock.sendall(body_head + b'{"a": ')
                held.append(sock)
            # Every head read, and every body past the grace a proxy's body gets.
            time.sleep(0.3)
            check = exchange(authz(handle), head("/ext_authz/orders"))
            took = time.monotonic() - started
            evicted = read_answer(held[0], timeout=1)
            return check, evicted, took, _closed_within(held[0], 2.0)
        finally:
            for sock in held:
                sock.close()

    async with running_sidecar(fault_opa.url, **{**LIMITS, "http_body_timeout": body_timeout}) as handle:
        check, evicted, took, closed_after = await asyncio.to_thread(hold_then_ask, handle)
        decisions = handle.decisions()
        evictions = handle.sidecar.http.connections.evicted
    # Within the body timeout: the newcomer got in by eviction, not because a
    # held request had timed out.
    assert took < body_timeout, took
    assert check.status == 200
    assert evicted.status == 408
    refused = {d["decision_id"]: d for d in decisions}[evicted.headers[DECISION_HEADER]]
    assert refused["http_status"] == 408
    assert "connection cap" in refused["detail"], refused
    assert evictions >= 1
    # Not kept open for the rest of its body (aiohttp's lingering: 1 s here).
    assert closed_after < 0.5, closed_after


async def test_beyond_a_cap_of_checks_in_flight_a_newcomer_is_denied_overloaded(fault_opa: FaultOpa) -> None:
    """When every connection at the cap is answering a whole request (checks
    waiting on a slow OPA), a newcomer is still read and answered: a recorded
    deny, `overloaded`, at once. Closed unanswered, it would be an error that a
    fail-open Envoy lets through."""
    fault_opa.set(Behaviour.delayed(1.0, then=Behaviour.json({"result": True})))
    cap = LIMITS["http_max_connections"]

    def fill_then_ask(handle: SidecarHandle) -> tuple[RawAnswer, list[int]]:
        held: list[socket.socket] = []
        try:
            for _ in range(cap):
                sock = connect(authz(handle))
                sock.sendall(head("/ext_authz/orders"))
                held.append(sock)
            assert fault_opa.wait_for_count(cap, timeout=5), fault_opa.count
            newcomer = exchange(authz(handle), head("/ext_authz/orders"), timeout=0.9)
            return newcomer, [read_answer(sock, timeout=5).status for sock in held]
        finally:
            for sock in held:
                sock.close()

    async with running_sidecar(fault_opa.url, **{**LIMITS, "opa_timeout": 3.0}) as handle:
        newcomer, held = await asyncio.to_thread(fill_then_ask, handle)
        decisions = {d["decision_id"]: d for d in handle.decisions()}
    assert newcomer.status == 403, newcomer
    assert newcomer.seconds < 0.5, newcomer  # not after OPA's answers to the others
    denied = decisions[newcomer.headers[DECISION_HEADER]]
    assert (denied["reason"], denied["http_status"]) == ("overloaded", 403), denied
    assert held == [200] * cap  # the checks in flight were answered as the policy said


def _closed_within(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (reset or end of stream)."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return limit
    return time.monotonic() - started


async def test_probes_answer_while_checks_flood_the_authorization_listener(sidecar: SidecarHandle) -> None:
    stop = asyncio.Event()

    def flood() -> int:
        sent = 0
        body = b'{"k": [' + b"1," * 900 + b"1]}"
        request = head("/v1/check", f"content-length: {len(body)}", method="POST") + body
        while not stop.is_set():
            exchange(authz(sidecar), request)
            sent += 1
        return sent

    floods = [asyncio.create_task(asyncio.to_thread(flood)) for _ in range(4)]
    await asyncio.sleep(0.3)
    health = [
        (await asyncio.to_thread(exchange, probes(sidecar), head("/readyz"), 1.0)).status for _ in range(5)
    ]
    stop.set()
    sent = sum(await asyncio.gather(*floods))
    assert health == [200] * 5
    assert sent > 5


def test_the_raw_refusal_is_one_complete_answer() -> None:
    raw = Refusal(431, ((DECISION_HEADER, "d"),)).raw()
    assert raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert raw.endswith(b"content-length: 0\r\nconnection: close\r\n\r\n")


async def test_the_probe_port_serves_no_checks(sidecar: SidecarHandle) -> None:
    answer = await asyncio.to_thread(exchange, probes(sidecar), head("/ext_authz/orders"))
    assert answer.status == 404
    answer = await asyncio.to_thread(exchange, authz(sidecar), head("/metrics"))
    assert answer.status == 404


async def test_listeners_on_unix_sockets(fault_opa: FaultOpa, tmp_path: Any) -> None:
    fault_opa.set(Behaviour.json({"result": True}))
    http_sock, probe_sock = str(tmp_path / "h.sock"), str(tmp_path / "p.sock")
    async with running_sidecar(
        fault_opa.url,
        http_addr=ListenAddress(unix_path=http_sock),
        probe_addr=ListenAddress(unix_path=probe_sock),
    ):
        check = await asyncio.to_thread(exchange, http_sock, head("/ext_authz/orders"))
        health = await asyncio.to_thread(exchange, probe_sock, head("/healthz"))
    assert (check.status, health.status) == (200, 200)


async def test_at_the_cap_a_busy_pooled_connection_outlives_idle_newcomers(sidecar: SidecarHandle) -> None:
    """A proxy's pooled connection has served many requests; a client that opens
    connections to sit on them has served one each. The cap evicts the latter."""
    cap = LIMITS["http_max_connections"]

    def pool_then_crowd() -> tuple[int, list[int]]:
        pooled = connect(authz(sidecar))
        crowd: list[socket.socket] = []
        try:
            for _ in range(3):
                pooled.sendall(head("/ext_authz/orders"))
                read_answer(pooled)
            for _ in range(2 * cap):
                sock = connect(authz(sidecar))
                sock.sendall(head("/ext_authz/orders"))
                read_answer(sock)
                crowd.append(sock)
            pooled.sendall(head("/ext_authz/orders"))
            return read_answer(pooled).status, [s.fileno() for s in crowd]
        finally:
            pooled.close()
            for sock in crowd:
                sock.close()

    status, _ = await asyncio.to_thread(pool_then_crowd)
    assert status == 200
    assert sidecar.sidecar.http.connections.evicted >= cap
