"""SIGTERM under load, on the real process: every in-flight check is answered,
the process exits 0 within --shutdown-grace, and nothing new is accepted."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import grpc
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from sidecar.envoy.response import PERMISSION_DENIED
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa
from tests.operations.sidecar_process import SidecarProcess

CHECKS = 50
STOPPING_LINE = "stopping: no new checks"


def _posts(fault: FaultOpa) -> int:
    return sum(r.method == "POST" for r in fault.requests)


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _exit_code(child: SidecarProcess, timeout: float) -> int:
    await _until(lambda: child.process.poll() is not None, timeout, "the process to exit")
    return child.process.returncode


def _start_checks(stub: AuthorizationStub, n: int, timeout: float) -> list[asyncio.Task[CheckResponse]]:
    async def one(i: int) -> CheckResponse:
        response: CheckResponse = await stub.Check(check_request("GET", f"/item/{i}"), timeout=timeout)
        return response

    return [asyncio.create_task(one(i)) for i in range(n)]


def _tcp_connect(target: str) -> str:
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):  # reset: queued as the listener shut
        return "refused"
    return "accepted"


async def _refused(target: str) -> grpc.StatusCode:
    """What a client opening a new connection now gets (its own subchannel: a
    channel to the same target would otherwise reuse the open connection)."""
    async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        try:
            await stub.Check(check_request(), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_sigterm_under_load_answers_every_check_and_exits_0(
    fault_opa: FaultOpa, tmp_path: Path
) -> None:
    fault_opa.set(Behaviour.delayed(0.8))
    child = SidecarProcess.start(tmp_path, fault_opa.url, "--opa-timeout", "2", "--shutdown-grace", "5")
    try:
        async with grpc.aio.insecure_channel(child.grpc_target) as channel:
            stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
            checks = _start_checks(stub, CHECKS, timeout=10)
            await _until(lambda: _posts(fault_opa) == CHECKS, 5, "every check to reach OPA")
            signalled = time.monotonic()
            child.signal()
            # A new client is turned away while the old ones are still being answered:
            # the listening socket closes as the drain begins, so the connect itself is refused.
            await _until(lambda: _tcp_connect(child.grpc_target) == "refused", 2, "the listener to close")
            new_client = await _refused(child.grpc_target)
            pending_when_refused = sum(not c.done() for c in checks)
            results = await asyncio.gather(*checks, return_exceptions=True)
        exit_code = await _exit_code(child, 5)
        exit_after = time.monotonic() - signalled
    finally:
        child.kill()
    assert [type(r).__name__ for r in results if not isinstance(r, CheckResponse)] == []
    assert all(isinstance(r, CheckResponse) and r.status.code == 0 for r in results)
    assert exit_code == 0
    assert exit_after < 5  # within the grace; the checks needed about 0.8 s
    assert new_client == grpc.StatusCode.UNAVAILABLE
    assert pending_when_refused > 0  # the refusal happened mid-drain, not after it
    decisions = child.decisions()
    assert len(decisions) == CHECKS
    assert {d["outcome"] for d in decisions} == {"allow"}
    # Nothing was asked twice and nothing new got through (GETs are readiness probes).
    assert _posts(fault_opa) == CHECKS


@pytest.mark.parametrize("second_sigterm", [False, True])
async def test_checks_still_waiting_for_opa_are_denied_when_the_grace_ends(
    fault_opa: FaultOpa, tmp_path: Path, second_sigterm: bool
) -> None:
    fault_opa.set(Behaviour.hang())
    grace = "30" if second_sigterm else "1"
    child = SidecarProcess.start(tmp_path, fault_opa.url, "--opa-timeout", "10", "--shutdown-grace", grace)
    n = 20
    try:
        async with grpc.aio.insecure_channel(child.grpc_target) as channel:
            stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
            checks = _start_checks(stub, n, timeout=15)
            await _until(lambda: _posts(fault_opa) == n, 5, "every check to reach OPA")
            child.signal()
            signalled = time.monotonic()
            await _until(lambda: STOPPING_LINE in child.stderr(), 2, "the stopping line")
            if second_sigterm:
                await asyncio.sleep(0.3)
                assert not any(c.done() for c in checks)  # still waiting: the grace is long
                child.signal()
                signalled = time.monotonic()
            results = await asyncio.gather(*checks, return_exceptions=True)
            answered_in = time.monotonic() - signalled
        exit_code = await _exit_code(child, 3)
        exit_after = time.monotonic() - signalled
    finally:
        child.kill()
    assert [type(r).__name__ for r in results if not isinstance(r, CheckResponse)] == []
    for response in results:
        assert isinstance(response, CheckResponse)
        assert response.status.code == PERMISSION_DENIED
        assert response.dynamic_metadata["deny_reason"] == "shutting_down"
    assert exit_code == 0
    # A second SIGTERM denies at once; otherwise the grace (1 s) bounds the wait.
    # Exiting after the last answer takes a few hundred ms more (closing gRPC, the interpreter).
    assert answered_in < (0.5 if second_sigterm else 1.2)
    assert exit_after < (1.5 if second_sigterm else 2.0)
    decisions = child.decisions()
    assert [d["reason"] for d in decisions] == ["shutting_down"] * n


async def test_http_mode_checks_are_part_of_the_drain(fault_opa: FaultOpa, tmp_path: Path) -> None:
    # Only an HTTP-mode check in flight: gRPC has nothing to drain, but the
    # grace still bounds this check and it is answered, not dropped.
    fault_opa.set(Behaviour.hang())
    child = SidecarProcess.start(
        tmp_path, fault_opa.url, "--opa-timeout", "5", "--shutdown-grace", "1", "--ready-without-opa"
    )
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{child.http_port}/ext_authz/orders"
            pending = asyncio.ensure_future(session.get(url, timeout=aiohttp.ClientTimeout(total=10)))
            await _until(lambda: _posts(fault_opa) == 1, 5, "the check to reach OPA")
            child.signal()
            signalled = time.monotonic()
            async with await pending as response:
                status = response.status
            answered_in = time.monotonic() - signalled
        exit_code = await _exit_code(child, 3)
        exit_after = time.monotonic() - signalled
    finally:
        child.kill()
    assert status == 403
    assert [d["reason"] for d in child.decisions()] == ["shutting_down"]
    assert answered_in < 1.2  # the grace, not the 5 s OPA budget
    assert exit_code == 0
    assert exit_after < 2.0


def _unix_connect(path: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except (ConnectionRefusedError, ConnectionResetError):
            return "refused"
    return "accepted"


async def test_a_unix_socket_listener_refuses_new_connections_while_the_drain_answers(
    fault_opa: FaultOpa, tmp_path: Path
) -> None:
    fault_opa.set(Behaviour.delayed(0.8))
    path = str(tmp_path / "authz.sock")
    # The later --grpc-addr wins over the TCP one SidecarProcess picks.
    child = SidecarProcess.start(
        tmp_path, fault_opa.url, "--opa-timeout", "2", "--grpc-addr", f"unix://{path}"
    )
    try:
        async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
            stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
            checks = _start_checks(stub, 5, timeout=10)
            await _until(lambda: _posts(fault_opa) == 5, 5, "every check to reach OPA")
            child.signal()
            await _until(lambda: _unix_connect(path) == "refused", 2, "the listener to close")
            pending_when_refused = sum(not c.done() for c in checks)
            results = await asyncio.gather(*checks, return_exceptions=True)
        exit_code = await _exit_code(child, 5)
    finally:
        child.kill()
    assert pending_when_refused == 5
    assert all(isinstance(r, CheckResponse) and r.status.code == 0 for r in results)
    assert exit_code == 0
    assert f"gRPC listener on unix://{path} shut" in child.stderr()
