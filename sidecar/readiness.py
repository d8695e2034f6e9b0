"""Readiness: serving, and (unless --ready-without-opa) OPA answering its /health.

OPA down does not stop the sidecar from answering: every check is denied
(opa_unreachable). Readiness reports that state so Kubernetes sends traffic
to pods whose OPA can allow anything at all; liveness (/healthz) does not
depend on OPA, so a down OPA never gets the sidecar restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from sidecar.envoy.service import SERVICE_NAME
from sidecar.metrics import Metrics

log = logging.getLogger(__name__)
PROBE_INTERVAL_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 1.0


class Readiness:
    def __init__(
        self,
        health: health_aio.HealthServicer,
        metrics: Metrics,
        opa_healthy: Callable[[float], Awaitable[bool]] | None,
    ) -> None:
        self._health = health
        self._metrics = metrics
        self._opa_healthy = opa_healthy  # None: readiness ignores OPA
        self.serving = False
        self.opa_ok = False
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.serving and (self._opa_healthy is None or self.opa_ok)

    def reason(self) -> str:
        if not self.serving:
            return "not serving (starting or draining)"
        if not self.ready:
            return "OPA /health does not answer 200"
        return "ready"

    async def start(self) -> None:
        self.serving = True
        if self._opa_healthy is not None:
            await self._probe()
            self._task = asyncio.create_task(self._probe_loop())
        await self._publish()

    async def draining(self) -> None:
        self.serving = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._health.enter_graceful_shutdown()

    async def _probe(self) -> None:
        assert self._opa_healthy is not None
        ok = await self._opa_healthy(PROBE_TIMEOUT_SECONDS)
        if ok != self.opa_ok:
            log.info("OPA health is now %s", "200" if ok else "failing")
        self.opa_ok = ok
        self._metrics.opa_reachable.set(1 if ok else 0)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            await self._probe()
            await self._publish()

    async def _publish(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)
