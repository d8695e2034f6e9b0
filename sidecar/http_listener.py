"""The HTTP listener (--http-addr): /metrics, /healthz, /readyz, and the HTTP
ways to ask for a decision (sidecar/http_authz.py)."""

from __future__ import annotations

from aiohttp import web

from sidecar.config import ListenAddress
from sidecar.http_authz import MAX_BODY_BYTES, HttpAuthz
from sidecar.metrics import Metrics
from sidecar.readiness import Readiness

_PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpListener:
    def __init__(
        self,
        addr: ListenAddress,
        metrics: Metrics,
        readiness: Readiness,
        authz: HttpAuthz | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._addr = addr
        self._reuse_port = reuse_port
        self._metrics = metrics
        self._readiness = readiness
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        if authz is not None:
            authz.register(self.app)
        self.app.router.add_get("/metrics", self._get_metrics)
        self.app.router.add_get("/healthz", self._get_healthz)
        self.app.router.add_get("/readyz", self._get_readyz)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site: web.BaseSite
        if self._addr.unix_path is not None:
            site = web.UnixSite(self._runner, self._addr.unix_path)
        else:
            site = web.TCPSite(
                self._runner,
                self._addr.host,
                self._addr.port,
                reuse_address=True,
                reuse_port=self._reuse_port,
            )
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets and self._addr.unix_path is None:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": _PROMETHEUS_TYPE})

    async def _get_healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _get_readyz(self, _request: web.Request) -> web.Response:
        ready = self._readiness.ready
        return web.json_response(
            {"status": "ready" if ready else "not ready", "reason": self._readiness.reason()},
            status=200 if ready else 503,
        )
