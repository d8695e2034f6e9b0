"""Process wiring: build the pipeline from Settings, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from sidecar import tracing
from sidecar.authorizer import Authorizer
from sidecar.config import ConfigError, ListenAddress, Settings
from sidecar.decision_log import DecisionLog
from sidecar.deny_memory import build_deny_memory
from sidecar.envoy.service import SERVICE_NAME, CheckService
from sidecar.grpc_options import server_options
from sidecar.grpc_relay import GrpcRelay, private_grpc_address
from sidecar.heap_trim import start_heap_trimmer
from sidecar.http_authz import HttpAuthz
from sidecar.http_limits import authz_limits, probe_limits
from sidecar.http_listener import HttpListener, authz_app, probe_app
from sidecar.http_refusal import DecisionRefuser, PlainRefuser
from sidecar.listen_sockets import created_with_mode, stop_accepting
from sidecar.masking import Masker
from sidecar.metrics import Metrics
from sidecar.opa.client import OpaClient
from sidecar.opa.http1 import Endpoint
from sidecar.opa.token import TokenFile, TokenFileError
from sidecar.readiness import Readiness
from sidecar.recording import Recorder
from sidecar.shadow import MAX_ANSWER_BYTES as SHADOW_MAX_ANSWER_BYTES
from sidecar.shadow import Shadow
from sidecar.tls import OpaTls, grpc_server_credentials, opa_tls
from sidecar.worker_link import beat, heartbeat_fd, inherited_listeners, send_heartbeats

log = logging.getLogger("sidecar")

# Checks still waiting this long before the grace ends are denied, so that
# each gets its answer before gRPC cancels what remains.
_ABORT_AHEAD_SECONDS = 0.25
# The drain ends once no check is in flight and none has arrived for this long,
# over at least this many turns of the loop (a process that was not scheduled
# has not looked): gRPC hands a received call to a handler within a turn or two,
# so by then nothing it received is left waiting. Only then is gRPC stopped,
# because stopping it cancels, unanswered, every call no handler has picked up.
_QUIET_SECONDS = 0.25
_QUIET_TURNS = 25


def _bound(addr: ListenAddress, port: int) -> ListenAddress:
    """The address as bound: port 0 asks for a free one."""
    return addr if port == 0 else ListenAddress(addr.host, port)


class StartupError(Exception):
    """The process cannot start serving (e.g. the address is taken)."""


def build_opa_client(
    settings: Settings, tls: OpaTls, decision_path: str | None = None, max_response_bytes: int | None = None
) -> OpaClient:
    url = settings.opa_url
    endpoint = Endpoint(url.host, url.port, unix_path=url.unix_path, ssl_context=tls)
    try:
        token = TokenFile(settings.opa_token_file) if settings.opa_token_file else None
    except TokenFileError as exc:
        raise ConfigError(str(exc)) from None
    return OpaClient(
        endpoint,
        path_prefix=url.path_prefix,
        decision_path=decision_path or settings.decision_path,
        strict_builtin_errors=settings.strict_builtin_errors,
        max_response_bytes=max_response_bytes or settings.opa_max_response_bytes,
        authorization=token,
    )


class Sidecar:
    """The running service: gRPC server, HTTP side listener, pipeline and OPA connections."""

    def __init__(self, settings: Settings, decisions: DecisionLog | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        tracing.configure(settings.decision_path, self.metrics.observe_spans_dropped)  # from OTEL_*
        opa_tls_context = opa_tls(settings, self.metrics.observe_tls_reload)  # re-read as files change
        self.opa = build_opa_client(settings, opa_tls_context)
        self.shadow = None
        if settings.shadow_decision_path is not None:
            self.shadow = Shadow(
                build_opa_client(
                    settings,
                    opa_tls_context,
                    settings.shadow_decision_path,
                    min(settings.opa_max_response_bytes, SHADOW_MAX_ANSWER_BYTES),
                ),
                settings.shadow_decision_path,
                settings.opa_timeout,
                settings.max_inflight,
            )
        self.deny_memory = build_deny_memory(settings, self.metrics)
        self.authorizer = Authorizer(
            self.opa,
            deny_memory=self.deny_memory,
            opa_timeout=settings.opa_timeout,
            max_inflight=settings.max_inflight,
            parse_body=not settings.skip_request_body_parse,
            require=settings.require,
            require_tls_peer=settings.require_tls_peer,
            shadow=self.shadow,
            max_request_bytes=settings.max_request_bytes,
            envoy_body_limit=settings.envoy_max_request_bytes,
            grpc_methods=settings.proto_descriptor,
        )
        masker = Masker(settings.mask_headers, settings.mask_pointers) if settings.log_input else None
        self.decisions = decisions or DecisionLog.open(
            settings.decision_log, settings.decision_path, masker, settings.decision_log_backlog_bytes
        )
        self.decisions.shadow_decision_path = settings.shadow_decision_path or ""
        self.recorder = Recorder(self.decisions, self.metrics)
        self.service = CheckService(self.authorizer, self.recorder)
        self.health = health_aio.HealthServicer()
        self.readiness = Readiness(
            self.health, self.metrics, None if settings.ready_without_opa else self.opa.healthy
        )
        authz = HttpAuthz(self.authorizer, self.recorder, settings.http_failure_status)
        # A --workers parent bound the listening sockets; a single process binds its own.
        self._inherited = inherited_listeners()
        refuser = DecisionRefuser(self.recorder, settings.http_failure_status)
        limits = authz_limits(settings)
        self.http = HttpListener(
            settings.http_addr,
            authz_app(authz, limits, refuser),
            limits,
            refuser,
            sock=self._inherited.get("http"),
            unix_socket_mode=settings.unix_socket_mode,
            unanswered=lambda: self.metrics.observe_http_unanswered("authz"),
        )
        probe = probe_limits(settings)
        self.probes = HttpListener(
            settings.probe_addr,
            probe_app(self.metrics, self.readiness, probe, PlainRefuser()),
            probe,
            PlainRefuser(),
            sock=self._inherited.get("probe"),
            unix_socket_mode=settings.unix_socket_mode,
            unanswered=lambda: self.metrics.observe_http_unanswered("probe"),
        )
        options = server_options(
            settings.max_request_bytes,
            settings.opa_timeout,
            reuse_port=False,  # workers share the socket their parent bound
        )
        self._server = grpc.aio.server(options=options)
        self._server.add_generic_rpc_handlers([self.service.handler()])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if settings.grpc_reflection:
            reflection.enable_server_reflection(
                [SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME], self._server
            )
        self.grpc_port = 0
        self._relay: GrpcRelay | None = None
        self._stopped = False

    @property
    def grpc_target(self) -> str:
        addr = self.settings.grpc_addr
        if addr.unix_path is not None:
            return f"unix://{addr.unix_path}"
        host = f"[{addr.host}]" if ":" in addr.host else addr.host
        return f"{host}:{self.grpc_port or addr.port}"

    async def start(self) -> None:
        target = self.grpc_target
        shared = self._inherited.get("grpc")
        if shared is not None:
            # gRPC listens privately; the relay feeds it from the shared socket.
            target, socket_name = private_grpc_address()
            self._relay = GrpcRelay(shared, socket_name)
        credentials = grpc_server_credentials(self.settings, self.metrics.observe_tls_reload)
        try:
            # gRPC binds (and creates a unix socket file) within this call.
            with created_with_mode(self.settings.unix_socket_mode):
                if credentials is None:
                    bound = self._server.add_insecure_port(target)
                else:
                    bound = self._server.add_secure_port(target, credentials)
        except RuntimeError:
            bound = 0
        if bound == 0:
            # gRPC does not say why; a port that is taken is the usual reason.
            raise StartupError(f"cannot listen on --grpc-addr {target}: taken, or not an address here")
        if self.settings.grpc_addr.unix_path is None:  # a unix socket has no port
            self.grpc_port = shared.getsockname()[1] if shared is not None else bound
        for flag, listener, addr in (
            ("--http-addr", self.http, self.settings.http_addr),
            ("--probe-addr", self.probes, self.settings.probe_addr),
        ):
            try:
                await listener.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {flag} {addr}: {exc.strerror}") from None
        await self._server.start()
        if self._relay is not None:
            await self._relay.start()
        await self.readiness.start()
        beats = heartbeat_fd()
        if beats is not None:
            # Serving from here on: the parent holds this worker to the heartbeat
            # timeout at once, not to the longer one it allows a worker starting.
            beat(beats)
        log.info(
            "serving ext_authz v3 on %s (%s); HTTP checks on %s; health and metrics on %s; "
            "asking OPA at %s for %s",
            self.grpc_target,
            "mTLS" if self.settings.grpc_client_ca else "TLS" if credentials else "plaintext",
            _bound(self.settings.http_addr, self.http.port),
            _bound(self.settings.probe_addr, self.probes.port),
            self.settings.opa_url,
            self.settings.decision_path,
        )

    async def stop(self, grace: float | None = None, force: asyncio.Event | None = None) -> None:
        """Stop accepting, answer every check received, then close.

        The connections already open keep being served, so every check gRPC has
        received reaches a handler and gets a real answer, until none is in
        flight and none arrives for a moment. Checks end within their own
        budget; if ``grace`` runs out first, or ``force`` is set (a second
        SIGTERM), what remains is denied. Only the first call does anything, so
        an owner may stop a sidecar a test or signal handler already stopped.
        """
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        grace = self.settings.shutdown_grace if grace is None else grace
        ends = loop.time() + grace
        await self.readiness.draining()
        self._stop_accepting()
        quiet = asyncio.ensure_future(self._quiet())
        waiters: list[asyncio.Future[Any]] = [quiet]
        if force is not None:
            waiters.append(asyncio.ensure_future(force.wait()))
        abort_in = max(ends - _ABORT_AHEAD_SECONDS - loop.time(), 0.0)
        done, _ = await asyncio.wait(waiters, timeout=abort_in, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if quiet not in done:
            log.warning("denying %d checks still in flight", self.authorizer.inflight)
            self.authorizer.abort_all()
        # GOAWAY on every connection; calls still running end with their answer.
        await self._server.stop(max(ends - loop.time(), _ABORT_AHEAD_SECONDS))
        # HTTP-mode checks are not part of gRPC's stop; abort_all has denied them.
        while self.authorizer.inflight:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await self.http.stop()
        await self.probes.stop()
        if self.shadow is not None:
            self.shadow.cancel_all()
        self.opa.close()
        if self.deny_memory is not None:
            await self.deny_memory.close()
        self.decisions.close()
        tracing.shutdown()

    def _stop_accepting(self) -> None:
        if self._relay is not None:
            self._relay.stop_accepting()  # the parent refuses new connections on the shared socket
            return
        addr = self.settings.grpc_addr
        if addr.unix_path is None:
            addr = ListenAddress(addr.host, self.grpc_port)
        if stop_accepting(addr):
            # gRPC then logs "Closing acceptor. Failed accept4: Invalid argument": this shutdown.
            log.info("gRPC listener on %s shut: new connections are refused", addr)
        else:
            log.warning("gRPC listener on %s not found: it accepts until gRPC stops", addr)

    async def _quiet(self) -> None:
        """Returns once no check is in flight (from any way in) and no gRPC check
        has arrived for _QUIET_SECONDS and _QUIET_TURNS."""
        loop = asyncio.get_running_loop()
        seen, since, turns = self.service.received, loop.time(), 0
        while True:
            await asyncio.sleep(_QUIET_SECONDS / _QUIET_TURNS)
            if self.authorizer.inflight or self.service.received != seen:
                seen, since, turns = self.service.received, loop.time(), 0
                continue
            turns += 1
            if turns >= _QUIET_TURNS and loop.time() - since >= _QUIET_SECONDS:
                return


async def serve(settings: Settings) -> None:
    # Raises ConfigError for TLS material or a token file whose content is bad:
    # those are read here, after the flags are parsed.
    sidecar = Sidecar(settings)
    await sidecar.start()
    beats = heartbeat_fd()
    heartbeats = asyncio.create_task(send_heartbeats(beats)) if beats is not None else None
    # What exists now lives as long as the process: out of the collector's
    # sight, a full collection (which runs on the event loop, between checks)
    # walks only what requests left behind, not every module and message type.
    gc.freeze()
    # Free C heap pages go back to the system (what a rapid-reset flood leaves, see heap_trim).
    trimmer = start_heap_trimmer()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    log.info("stopping: no new checks; answering the %d in flight", sidecar.authorizer.inflight)
    with contextlib.suppress(asyncio.CancelledError):
        await sidecar.stop(force=force)
    if heartbeats is not None:
        heartbeats.cancel()
    if trimmer is not None:
        trimmer.stop()
    log.info("stopped")
