"""/readyz, /healthz and grpc.health.v1 follow OPA's health, --ready-without-opa
and the drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar import readiness
from sidecar.envoy.service import SERVICE_NAME
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.operations.sidecar_process import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(autouse=True)
def fast_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe loop reads the interval on every round; 2 s in production.
    monkeypatch.setattr(readiness, "PROBE_INTERVAL_SECONDS", 0.1)


def _health_down(request: RecordedRequest) -> Behaviour:
    return Behaviour.answer(500, b'{"code":"internal_error"}\n') if request.path == "/health" else Behaviour()


async def _http_status(handle: SidecarHandle, path: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{handle.sidecar.probes.port}{path}") as response,
    ):
        return response.status


async def _health(handle: SidecarHandle, service: str = "") -> int:
    async with grpc.aio.insecure_channel(handle.sidecar.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(reply.status)


async def _state(handle: SidecarHandle) -> tuple[int, int, int, int]:
    """(/readyz, /healthz, health of "", health of the Authorization service)."""
    return (
        await _http_status(handle, "/readyz"),
        await _http_status(handle, "/healthz"),
        await _health(handle),
        await _health(handle, SERVICE_NAME),
    )


class Watch:
    """A grpc.health.v1 Watch stream: each status change as it is published."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        stub = health_pb2_grpc.HealthStub(self._channel)
        self._call = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))

    async def next(self, timeout: float = 2.0) -> int:
        reply = await asyncio.wait_for(self._call.read(), timeout)
        return int(reply.status)

    async def until(self, status: int, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.next(timeout) != status:
                pass

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close(None)


@pytest.fixture
async def probed_sidecar(fault_opa: FaultOpa) -> AsyncIterator[SidecarHandle]:
    async with running_sidecar(fault_opa.url, ready_without_opa=False) as handle:
        yield handle


async def test_ready_while_opa_is_healthy_and_not_while_it_is_down(
    probed_sidecar: SidecarHandle, fault_opa: FaultOpa
) -> None:
    assert await _state(probed_sidecar) == (200, 200, SERVING, SERVING)
    watch = Watch(probed_sidecar.sidecar.grpc_target)
    try:
        assert await watch.next() == SERVING
        fault_opa.set(_health_down)
        await watch.until(NOT_SERVING)
        # Liveness does not follow OPA: a restart would not bring OPA back.
        assert await _state(probed_sidecar) == (503, 200, NOT_SERVING, NOT_SERVING)
        fault_opa.set(Behaviour())
        await watch.until(SERVING)
        assert await _state(probed_sidecar) == (200, 200, SERVING, SERVING)
    finally:
        await watch.close()


async def test_not_ready_without_any_opa() -> None:
    closed_port = free_port()  # nothing listens there
    async with running_sidecar(f"http://127.0.0.1:{closed_port}", ready_without_opa=False) as handle:
        # Decided by the first probe, before the listener reports anything.
        assert await _state(handle) == (503, 200, NOT_SERVING, NOT_SERVING)


async def test_ready_without_opa_ignores_opa(fault_opa: FaultOpa) -> None:
    fault_opa.set(_health_down)
    closed_port = free_port()
    for url in (fault_opa.url, f"http://127.0.0.1:{closed_port}"):
        async with running_sidecar(url, ready_without_opa=True) as handle:
            await asyncio.sleep(0.3)  # several probe intervals
            assert await _state(handle) == (200, 200, SERVING, SERVING)
    assert fault_opa.count == 0  # it does not even ask


async def test_draining_is_not_serving_while_checks_finish(fault_opa: FaultOpa) -> None:
    fault_opa.set(lambda r: Behaviour.delayed(0.5) if r.method == "POST" else Behaviour())
    async with running_sidecar(fault_opa.url, ready_without_opa=False, opa_timeout=2.0) as handle:
        watch = Watch(handle.sidecar.grpc_target)
        try:
            assert await watch.next() == SERVING
            check = asyncio.ensure_future(handle.check(check_request()))
            assert await asyncio.to_thread(fault_opa.wait_for_count, 2, 2)  # probe + the check
            stopping = asyncio.ensure_future(handle.sidecar.stop())
            await watch.until(NOT_SERVING)
            assert not check.done()
            assert await _http_status(handle, "/readyz") == 503
            assert await _http_status(handle, "/healthz") == 200
        finally:
            await watch.close()
        assert (await check).status.code == 0
        await asyncio.wait_for(stopping, 3)
