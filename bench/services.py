"""Starting the processes a run measures, each on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.configs import render
from bench.decisions import DecisionLogReader
from bench.procs import BenchError, Service, free_port
from tests.fixtures.opa import opa_binary

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 60.0


@dataclass
class Server:
    """A started service and the port it answers on."""

    service: Service
    port: int

    @property
    def pid(self) -> int:
        return self.service.pid


@dataclass
class SidecarServer(Server):
    decisions: DecisionLogReader


def sidecar_options() -> set[str]:
    """The flags ``python -m sidecar serve`` knows, so the harness can follow
    the sidecar as it grows (e.g. give each one its own --http-addr)."""
    out = subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    return {word.rstrip(",") for word in out.split() if word.startswith("--")}


def start_floor(workdir: Path) -> Server:
    port = free_port()
    service = Service("floor", [sys.executable, "-m", "bench.floor", "--port", str(port)], workdir, REPO)
    return Server(service, port)


def start_nginx(nginx: str, workdir: Path) -> Server:
    port = free_port()
    conf = render("nginx.conf", workdir / "nginx.conf", port=port, workdir=workdir)
    argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "nginx.error.log")]
    return Server(Service("nginx", argv, workdir), port)


def start_opa(workdir: Path) -> Server:
    """The real `opa run --server` when there is one (as the tests pick it), else the
    OPA test server on the OPA engine."""
    port = free_port()
    binary = opa_binary()
    if binary:
        argv = [binary, "run", "--server", "--addr", f"127.0.0.1:{port}", "--skip-version-check"]
        argv += ["--log-level=error"]
    else:
        argv = [sys.executable, "-m", "tests.opa_server", "--addr", f"127.0.0.1:{port}"]
    argv += ["rego", "scripts/demo_data.json"]  # with the demo's routes, whose public one R's requests take
    return Server(Service("opa", argv, workdir, REPO), port)


def describe_opa() -> str:
    """Which OPA ``start_opa`` runs, for the report."""
    binary = opa_binary()
    if not binary:
        return "the OPA test server on the OPA engine (no `opa` binary found)"
    version = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30, check=False)
    first = version.stdout.splitlines()[0].strip() if version.stdout else "version unknown"
    return f"the real OPA, `opa run --server` ({first})"


def start_sidecar(
    name: str, opa_port: int, workdir: Path, options: set[str], extra: tuple[str, ...] = ()
) -> SidecarServer:
    port = free_port()
    argv = [sys.executable, "-m", "sidecar", "serve"]
    argv += ["--opa-url", f"http://127.0.0.1:{opa_port}", "--grpc-addr", f"127.0.0.1:{port}"]
    argv += ["--log-level", "warning"]
    if "--http-addr" in options:  # HTTP checks listener: keep it off the default port
        argv += ["--http-addr", f"127.0.0.1:{free_port()}"]
    # Probes and metrics: off the default port, so sidecars run side by side.
    argv += ["--probe-addr", f"127.0.0.1:{free_port()}"]
    service = Service(name, [*argv, *extra], workdir, REPO)
    # Decision log lines go to stdout, as in production: the harness counts them.
    return SidecarServer(service, port, DecisionLogReader(service.stdout_path))


@dataclass
class EnvoyServer(Server):
    direct_port: int
    admin_port: int


def start_envoy(envoy: str, sidecar_port: int, workdir: Path) -> EnvoyServer:
    ports = {"admin_port": free_port(), "direct_port": free_port(), "authz_port": free_port()}
    conf = render("envoy.yaml", workdir / "envoy.yaml", sidecar_port=sidecar_port, **ports)
    argv = [envoy, "-c", str(conf), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]
    service = Service("envoy", argv, workdir)
    return EnvoyServer(service, ports["authz_port"], ports["direct_port"], ports["admin_port"])


def wait_envoy_ready(envoy: EnvoyServer) -> None:
    def live() -> bool:
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{envoy.admin_port}/ready"
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        return False

    envoy.service.wait_until(live, STARTUP_TIMEOUT)
    envoy.service.wait_for_port(envoy.port, STARTUP_TIMEOUT)
    envoy.service.wait_for_port(envoy.direct_port, STARTUP_TIMEOUT)


def wait_ready(server: Server) -> None:
    server.service.wait_for_port(server.port, STARTUP_TIMEOUT)


def floor_calls(floor: Server) -> int:
    """How many checks the floor answered (it prints ``calls N`` on SIGUSR1)."""
    before = floor.service.stdout_path.read_text().count("calls ")
    os.kill(floor.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [ln for ln in floor.service.stdout_path.read_text().splitlines() if ln.startswith("calls ")]
        if len(lines) > before:
            return int(lines[-1].split()[1])
        time.sleep(0.02)
    raise BenchError("the floor server did not report its call count")
