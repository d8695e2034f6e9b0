"""The sidecar's two HTTP listeners, each with its own limits.

- The probe listener (--probe-addr): /healthz, /readyz and /metrics, for the
  kubelet and Prometheus. It may bind the pod address.
- The authorization listener (--http-addr): ext_authz HTTP mode and the JSON
  check API (sidecar/http_authz.py), on loopback or a unix socket by default.

Apart, a client flooding the authorization listener cannot take the probes
down with it, and a probe port reachable from outside the pod asks no policy.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from aiohttp import web

from sidecar.config import ListenAddress
from sidecar.http_admission import LoopTurns, admission, head_limit
from sidecar.http_authz import HttpAuthz
from sidecar.http_guard import ConnectionTable, GuardedRequestHandler
from sidecar.http_limits import HttpLimits
from sidecar.http_refusal import Refuser
from sidecar.library_logs import withhold_request_data
from sidecar.listen_sockets import BACKLOG, created_with_mode, serve_inherited
from sidecar.metrics import Metrics
from sidecar.readiness import Readiness

_PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def probe_app(
    metrics: Metrics, readiness: Readiness, limits: HttpLimits, refuser: Refuser
) -> web.Application:
    async def get_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": _PROMETHEUS_TYPE})

    async def get_healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def get_readyz(_request: web.Request) -> web.Response:
        ready = readiness.ready
        return web.json_response(
            {"status": "ready" if ready else "not ready", "reason": readiness.reason()},
            status=200 if ready else 503,
        )

    app = web.Application(middlewares=[head_limit(limits, refuser)])
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    return app


def authz_app(authz: HttpAuthz, limits: HttpLimits, refuser: Refuser) -> web.Application:
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        middlewares=[head_limit(limits, refuser), admission(limits, refuser, LoopTurns())],
    )
    authz.register(app)
    return app


class HttpListener:
    def __init__(
        self,
        addr: ListenAddress,
        app: web.Application,
        limits: HttpLimits,
        refuser: Refuser,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        unix_socket_mode: int = 0o660,
        unanswered: Callable[[], None] = lambda: None,
    ) -> None:
        self._addr = addr
        self.app = app
        self._limits = limits
        self._refuser = refuser
        self._reuse_port = reuse_port
        self._sock = sock  # a listening socket bound by the --workers parent
        self._unix_socket_mode = unix_socket_mode
        self._unanswered = unanswered  # a connection closed unanswered, the listener full
        self.connections = ConnectionTable(limits.max_connections)
        self.beyond_cap = ConnectionTable(limits.over_cap_connections)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        withhold_request_data()
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        web_server = self._runner.server
        assert web_server is not None  # set by setup()

        def connection() -> GuardedRequestHandler:
            return GuardedRequestHandler(
                web_server,
                loop=loop,
                limits=self._limits,
                table=self.connections,
                overflow=self.beyond_cap,
                refuser=self._refuser,
                unanswered=self._unanswered,
            )

        try:
            if self._sock is not None:
                self._server = await serve_inherited(loop, connection, self._sock)
                if self._sock.family != socket.AF_UNIX:
                    self.port = self._sock.getsockname()[1]
            elif self._addr.unix_path is not None:
                # Nothing else runs on the loop before the first checks, and the
                # call binds before it awaits anything.
                with created_with_mode(self._unix_socket_mode):
                    self._server = await loop.create_unix_server(
                        connection, self._addr.unix_path, backlog=BACKLOG
                    )
            else:
                self._server = await loop.create_server(
                    connection,
                    self._addr.host,
                    self._addr.port,
                    family=socket.AF_INET6 if ":" in self._addr.host else socket.AF_INET,
                    reuse_address=True,
                    reuse_port=self._reuse_port or None,
                    backlog=BACKLOG,
                )
                self.port = self._server.sockets[0].getsockname()[1]
        except OSError:
            await self._runner.cleanup()
            raise

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._runner.cleanup()
