"""One benchmark run: start every setup, drive each with a closed-loop load,
check that the answers were real, collect the numbers, stop everything."""

from __future__ import annotations

import contextlib
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType

from bench import loadgen, workload
from bench.decisions import Tally
from bench.loadgen import Load
from bench.procs import (
    cpu_seconds,
    cpu_steal_jiffies,
    machine_busy_seconds,
    own_cpu_seconds,
    rss_bytes,
)
from bench.profile import profile
from bench.results import Results, Row, Soak
from bench.services import (
    EnvoyServer,
    Server,
    SidecarServer,
    describe_opa,
    floor_calls,
    sidecar_options,
    start_envoy,
    start_floor,
    start_nginx,
    start_opa,
    start_sidecar,
    wait_envoy_ready,
    wait_ready,
)

GRPC_URL = "http://127.0.0.1:{port}" + workload.CHECK_PATH
OPA_URL = "http://127.0.0.1:{port}/v1/data/envoy/authz/allow?strict-builtin-errors=true"
PROFILE_CONCURRENCY = 16
HTTP_HEADERS = ("accept: application/json", "x-request-id: 3f6c1d9e-8a4b-4c2e-9f1a-7b5d3e2c1a0f")


@dataclass(frozen=True)
class Plan:
    duration: float  # seconds per measured point
    concurrencies: tuple[int, ...]
    warmup_checks: int
    soak_checks: int = 0
    profile: bool = False
    loadgen_cpu: int | None = None  # the one CPU every load generator runs on; None: any


class Run:
    def __init__(self, plan: Plan, tools: dict[str, str], workdir: Path) -> None:
        self.plan = plan
        self.tools = tools
        self.workdir = workdir
        self.results = Results()
        self._frame = workdir / "check.grpc"
        self._frame.write_bytes(workload.check_request_frame())
        self._opa_body = workdir / "opa-input.json"
        self._opa_body.write_bytes(workload.opa_request_body())
        self._servers: list[Server] = []

    # -- load

    def _grpc(
        self, port: int, concurrency: int, *, duration: float | None = None, n: int | None = None
    ) -> Load:
        seconds = duration if duration is not None else (n or 0) / 100
        return loadgen.h2load(
            self.tools["h2load"],
            GRPC_URL.format(port=port),
            data=self._frame,
            headers=workload.GRPC_HEADERS,
            concurrency=concurrency,
            duration=duration,
            requests=n,
            log_file=self.workdir / "h2load.log",
            timeout=seconds + 60,
            cpu=self.plan.loadgen_cpu,
        )

    def _grpc_checks(self, port: int, concurrency: int, n: int) -> Load:
        """``n`` checks in runs of about 40 s: the sidecar ends every gRPC
        connection after 60 s (GOAWAY, sidecar/grpc_options.py) and h2load does
        not reconnect, so one long run would stop short of ``n``."""
        runs: list[Load] = []
        done, chunk = 0, 20_000
        while done < n:
            load = self._grpc(port, concurrency, n=min(chunk, n - done))
            runs.append(load)
            done += load.completed
            if load.errors or not load.completed:
                break
            chunk = max(1_000, int(load.rate * 40))
        return loadgen.combined(runs)

    def _post(self, port: int, concurrency: int) -> Load:
        return loadgen.h2load(
            self.tools["h2load"],
            OPA_URL.format(port=port),
            data=self._opa_body,
            headers=("content-type: application/json", "accept: application/json"),
            concurrency=concurrency,
            duration=self.plan.duration,
            http1=True,
            log_file=self.workdir / "h2load.log",
            timeout=self.plan.duration + 60,
            cpu=self.plan.loadgen_cpu,
        )

    def _wrk(self, port: int, concurrency: int, duration: float) -> Load:
        return loadgen.wrk(
            self.tools["wrk"],
            f"http://127.0.0.1:{port}{workload.HTTP_PATH}",
            headers=HTTP_HEADERS,
            concurrency=concurrency,
            duration=duration,
            timeout=duration + 60,
            cpu=self.plan.loadgen_cpu,
        )

    # -- one measured point

    def _measure(
        self,
        setup: str,
        concurrency: int,
        measured_pid: int,
        drive: Callable[[], Load],
        verify: Callable[[Load], tuple[str, bool]],
        backend_pid: int | None = None,
    ) -> Row:
        """``backend_pid``: the OPA the sidecar asks, whose CPU is part of the check's path."""
        backend_before = cpu_seconds(backend_pid) if backend_pid is not None else 0.0
        cpu_before = cpu_seconds(measured_pid)
        ours_before = self._our_cpu()
        busy_before = machine_busy_seconds()
        load = drive()
        busy = machine_busy_seconds() - busy_before
        ours = self._our_cpu() - ours_before + load.loadgen_cpu_s
        cpu = cpu_seconds(measured_pid) - cpu_before
        backend = cpu_seconds(backend_pid) - backend_before if backend_pid is not None else None
        verified, answers_ok = verify(load)
        row = Row(
            setup=setup,
            concurrency=concurrency,
            load=load,
            server_cpu_s=cpu,
            server_rss_bytes=rss_bytes(measured_pid),
            verified=verified,
            ok=answers_ok and load.errors == 0 and load.completed > 0,
            other_cpu_s=max(0.0, busy - ours),
            backend_cpu_s=backend,
        )
        self.results.rows.append(row)
        print(
            f"  {setup:<3} c={concurrency:<3} {load.rate:9.0f}/s  p50 {load.p50_ms:7.3f} ms  "
            f"p99 {load.p99_ms:7.3f} ms  {verified}{'' if row.ok else '  <-- FAILED'}",
            flush=True,
        )
        return row

    def _our_cpu(self) -> float:
        """CPU of every process of the run so far, the harness included."""
        live = [s for s in self._servers if s.service.popen.poll() is None]
        return own_cpu_seconds() + sum(cpu_seconds(s.pid) for s in live)

    def _sidecar_verifier(
        self, setup: str, concurrency: int, sidecar: SidecarServer
    ) -> Callable[[Load], tuple[str, bool]]:
        """Every answer counted must be a logged decision; checks cut off when
        the load generator stopped may add up to ``concurrency`` more. Denies
        are real answers (e.g. a slow OPA past the budget) and are reported."""

        def verify(load: Load) -> tuple[str, bool]:
            tally = sidecar.decisions.read_new()
            upper = max(load.started, load.completed) + concurrency
            denied = tally.lines - tally.allows
            if denied:
                self.results.notes.append(
                    f"{setup} at concurrency {concurrency}: {denied:,} of {tally.lines:,} checks were denied "
                    "(the sidecar failing closed, e.g. OPA not answering within --opa-timeout); "
                    "they count in checks/s and latency."
                )
            readable = "unreadable line" not in tally.outcomes
            return tally.describe(), readable and load.completed <= tally.lines <= upper

        return verify

    def _floor_verifier(self, floor: Server) -> Callable[[Load], tuple[str, bool]]:
        before = floor_calls(floor)

        def verify(load: Load) -> tuple[str, bool]:
            calls = floor_calls(floor) - before
            return f"{calls} answered", load.completed <= calls <= load.started

        return verify

    @staticmethod
    def _status_verifier(load: Load) -> tuple[str, bool]:
        return f"{load.completed} 2xx", load.errors == 0

    # -- the run

    def _warm(self, sidecar: SidecarServer | Server, port: int) -> None:
        self._grpc(port, 4, n=self.plan.warmup_checks)
        if isinstance(sidecar, SidecarServer):
            sidecar.decisions.read_new()

    def _start(self, server: Server) -> Server:
        self._servers.append(server)
        return server

    def execute(self) -> Results:
        plan, workdir = self.plan, self.workdir
        options = sidecar_options()
        steal0 = cpu_steal_jiffies()
        floor = self._start(start_floor(workdir))
        nginx = self._start(start_nginx(self.tools["nginx"], workdir))
        opa = self._start(start_opa(workdir))
        self.results.opa = describe_opa()
        for server in (floor, nginx, opa):
            wait_ready(server)
        z = start_sidecar("sidecar-z", nginx.port, workdir, options)
        r = start_sidecar("sidecar-r", opa.port, workdir, options)
        z2 = None
        if "--workers" in options:
            z2 = start_sidecar("sidecar-z2", nginx.port, workdir, options, ("--workers", "2"))
        else:
            self.results.notes.append(
                "Z2 (`--workers 2`) not measured: this sidecar has no `--workers` option yet."
            )
        sidecars = [s for s in (z, r, z2) if s is not None]
        for sidecar in sidecars:
            self._start(sidecar)
        for sidecar in sidecars:
            wait_ready(sidecar)
        for server in (floor, *sidecars):
            self._warm(server, server.port)

        print(f"gRPC checks, {plan.duration:g}s per point:", flush=True)
        grpc_setups: list[tuple[str, Server]] = [("F", floor), ("Z", z), ("R", r)]
        if z2 is not None:
            grpc_setups.append(("Z2", z2))
        for concurrency in plan.concurrencies:
            for setup, server in grpc_setups:
                verify = (
                    self._sidecar_verifier(setup, concurrency, server)
                    if isinstance(server, SidecarServer)
                    else self._floor_verifier(server)
                )
                self._measure(
                    setup,
                    concurrency,
                    server.pid,
                    partial(self._grpc, server.port, concurrency, duration=plan.duration),
                    verify,
                    backend_pid=opa.pid if setup == "R" else None,
                )
        print("direct POSTs of the OPA input, concurrency 1:", flush=True)
        for setup, backend in (("N", nginx), ("O", opa)):
            self._post(backend.port, 1)  # warm-up: a connection and a first evaluation
            self._measure(setup, 1, backend.pid, partial(self._post, backend.port, 1), self._status_verifier)

        if plan.profile:
            self._profile(z)
        envoy = start_envoy(self.tools["envoy"], z.port, workdir)
        self._start(envoy)
        wait_envoy_ready(envoy)
        self._envoy_rows(envoy, z)
        if plan.soak_checks:
            self._soak(nginx, options)
        steal1 = cpu_steal_jiffies()
        ticks = steal1[1] - steal0[1]
        self.results.steal_share = (steal1[0] - steal0[0]) / ticks if ticks else 0.0
        return self.results

    def _envoy_rows(self, envoy: EnvoyServer, z: SidecarServer) -> None:
        plan = self.plan
        wrk_seconds = max(1.0, round(plan.duration))
        self._wrk(envoy.direct_port, 4, 1)
        self._wrk(envoy.port, 4, 1)
        z.decisions.read_new()
        print(f"HTTP through Envoy (wrk), {wrk_seconds:g}s per point:", flush=True)
        for concurrency in plan.concurrencies:
            self._measure(
                "E0",
                concurrency,
                envoy.pid,
                partial(self._wrk, envoy.direct_port, concurrency, wrk_seconds),
                self._status_verifier,
            )
            self._measure(
                "EZ",
                concurrency,
                z.pid,
                partial(self._wrk, envoy.port, concurrency, wrk_seconds),
                self._sidecar_verifier("EZ", concurrency, z),
            )

    def _profile(self, z: SidecarServer) -> None:
        concurrency = PROFILE_CONCURRENCY
        seconds = max(2.0, self.plan.duration)
        print(f"profiling Z with py-spy for {seconds:g}s at concurrency {concurrency}", flush=True)
        perf = shutil.which("perf")
        if perf is None:
            self.results.notes.append("perf is not installed: the profile has no split by binary.")
        self.results.profile = profile(
            self.tools["py-spy"],
            perf,
            z.pid,
            seconds,
            concurrency,
            partial(self._grpc, z.port, concurrency, duration=seconds),
            self.workdir,
        )
        z.decisions.read_new()

    def _soak(self, nginx: Server, options: set[str]) -> None:
        """A fresh Z sidecar: RSS after a warm-up, after half the checks, after all."""
        n, concurrency = self.plan.soak_checks, 16
        sidecar = start_sidecar("sidecar-soak", nginx.port, self.workdir, options)
        self._start(sidecar)
        wait_ready(sidecar)
        print(f"memory soak: {n} checks at concurrency {concurrency}", flush=True)
        self._warm(sidecar, sidecar.port)
        rss_start = rss_bytes(sidecar.pid)
        halves = []
        rss_half = 0
        for half in (n // 2, n - n // 2):
            load = self._grpc_checks(sidecar.port, concurrency, half)
            tally = sidecar.decisions.read_new()
            halves.append((load, tally))
            if not rss_half:
                rss_half = rss_bytes(sidecar.pid)
            rss = rss_bytes(sidecar.pid) / 2**20
            print(f"  {half} checks: {load.rate:.0f}/s, RSS {rss:.1f} MiB", flush=True)
        rss_end = rss_bytes(sidecar.pid)
        completed = sum(load.completed for load, _ in halves)
        tally = Tally()
        for _, half_tally in halves:
            tally.lines += half_tally.lines
            tally.outcomes.update(half_tally.outcomes)
        seconds = sum(load.seconds for load, _ in halves)
        self.results.soak = Soak(
            checks=completed,
            concurrency=concurrency,
            rss_start=rss_start,
            rss_half=rss_half,
            rss_end=rss_end,
            rate=completed / seconds if seconds else 0.0,
            verified=tally.describe(),
            ok=completed == tally.lines == n
            and "unreadable line" not in tally.outcomes
            and all(load.errors == 0 for load, _ in halves),
        )
        if tally.allows != tally.lines:
            self.results.notes.append(
                f"Soak: {tally.lines - tally.allows:,} checks were denied ({tally.describe()})."
            )
        sidecar.service.stop()

    def stop_all(self) -> list[str]:
        """Stop every started process; returns complaints about unclean exits."""
        problems = []
        for server in reversed(self._servers):
            status = server.service.stop()
            if status not in (0, -signal.SIGTERM, None):
                problems.append(f"{server.service.name} exited with status {status}")
        return problems


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so the run's cleanup still happens."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
