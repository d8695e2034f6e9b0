"""Process wiring: build the pipeline from Settings, serve gRPC, stop on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from sidecar.authorizer import Authorizer
from sidecar.config import Settings
from sidecar.decision_log import DecisionLog
from sidecar.envoy.service import CheckService
from sidecar.opa.client import OpaClient
from sidecar.opa.http1 import Endpoint

log = logging.getLogger("sidecar")

# gRPC refuses messages over 4 MiB with an error status before any handler
# runs, and Envoy may treat an error as an allow. Envoy's own body limit
# bounds what it sends; the sidecar accepts it and decides.
_GRPC_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.so_reuseport", 0)]


class StartupError(Exception):
    """The process cannot start serving (e.g. the address is taken)."""


def build_opa_client(settings: Settings) -> OpaClient:
    url = settings.opa_url
    endpoint = Endpoint(url.host, url.port, unix_path=url.unix_path)
    return OpaClient(
        endpoint,
        path_prefix=url.path_prefix,
        decision_path=settings.decision_path,
        strict_builtin_errors=settings.strict_builtin_errors,
        max_response_bytes=settings.opa_max_response_bytes,
    )


class Sidecar:
    """The running service: gRPC server, pipeline and OPA connections."""

    def __init__(self, settings: Settings, decisions: DecisionLog | None = None) -> None:
        self.settings = settings
        self.opa = build_opa_client(settings)
        self.authorizer = Authorizer(
            self.opa,
            opa_timeout=settings.opa_timeout,
            max_inflight=settings.max_inflight,
            parse_body=not settings.skip_request_body_parse,
            require=settings.require,
            require_tls_peer=settings.require_tls_peer,
        )
        self.service = CheckService(self.authorizer, decisions or DecisionLog(settings.decision_path))
        self._server = grpc.aio.server(options=_GRPC_OPTIONS)
        self._server.add_generic_rpc_handlers([self.service.handler()])
        self.grpc_port = 0

    @property
    def grpc_target(self) -> str:
        addr = self.settings.grpc_addr
        if addr.unix_path is not None:
            return f"unix://{addr.unix_path}"
        host = f"[{addr.host}]" if ":" in addr.host else addr.host
        return f"{host}:{self.grpc_port or addr.port}"

    async def start(self) -> None:
        target = self.grpc_target
        try:
            bound = self._server.add_insecure_port(target)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {target}: {exc}") from None
        if bound == 0:
            raise StartupError(f"cannot listen on {target}")
        if self.settings.grpc_addr.unix_path is None:
            self.grpc_port = bound
        await self._server.start()
        log.info(
            "serving ext_authz v3 on %s; asking OPA at %s for %s",
            self.grpc_target,
            self.settings.opa_url,
            self.settings.decision_path,
        )

    async def stop(self) -> None:
        # In-flight checks end within their own budget (at most --opa-timeout).
        await self._server.stop(self.settings.opa_timeout + 1.0)
        self.opa.close()


async def serve(settings: Settings) -> None:
    sidecar = Sidecar(settings)
    await sidecar.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: no new checks; answering those in flight")
    await sidecar.stop()
    log.info("stopped")
