"""A burst of requests through a real Envoy at the moment the sidecar gets SIGTERM.

Envoy runs the shipped configuration turned fail-open (`failure_mode_allow: true`)
or as shipped, in front of the echo upstream; the sidecar (one process or
`--workers N`) asks the fault OPA, which answers "no" to every check. So a 200
can only be a check Envoy let through without an answer from the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import EnvoyProcess, local_addresses, settled_log, start_envoy
from deploy.render import render_envoy
from tests.e2e.stack import fail_open
from tests.fault_opa import Behaviour, FaultOpa
from tests.operations.sidecar_process import REPO_ROOT, child_env, free_port, serve_command

READY_LINE = "serving ext_authz v3 on"
# Answered within the sidecar's 0.15 s budget, and a deny: no 200 comes from OPA.
OPA_DENIES = Behaviour.delayed(0.05, Behaviour.json({"result": False}))


@dataclass
class Burst:
    statuses: Counter[int]
    paths: list[str]
    decisions: list[dict[str, Any]]  # decision log lines of the burst's checks
    envoy_counters: dict[str, int]
    exit_code: int
    drain_seconds: float  # SIGTERM to the sidecar's exit

    @property
    def let_through(self) -> int:
        return self.statuses[200]

    @property
    def unlogged(self) -> list[str]:
        logged = {d.get("path") for d in self.decisions}
        return [p for p in self.paths if p not in logged]


@dataclass
class DrainStack:
    sidecar: subprocess.Popen[bytes]
    envoy: EnvoyProcess
    workdir: Path
    fault: FaultOpa

    def decisions(self) -> list[dict[str, Any]]:
        return settled_log((self.workdir / "decisions.jsonl").read_bytes)

    def stderr(self) -> str:
        return (self.workdir / "sidecar.stderr").read_text(errors="replace")

    async def burst_at_sigterm(self, n: int, grace: float) -> Burst:
        """`n` requests at once (one connection each to Envoy); SIGTERM once the
        first check reaches OPA."""
        paths = [f"/burst/{i}" for i in range(n)]
        timeout = aiohttp.ClientTimeout(total=grace + 10)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True), timeout=timeout
        ) as session:

            async def one(path: str) -> int:
                try:
                    async with session.get(f"http://127.0.0.1:{self.envoy.port}{path}") as response:
                        await response.read()
                        return response.status
                except aiohttp.ClientError:
                    return 0

            # Envoy's connection to the sidecar is open, as it is in steady state.
            assert await one("/warm-up") == 403
            asked = self.fault.count
            requests = [asyncio.ensure_future(one(path)) for path in paths]
            while self.fault.count == asked:
                await asyncio.sleep(0.001)
            self.sidecar.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            statuses = Counter(await asyncio.gather(*requests))
        while self.sidecar.poll() is None:
            assert time.monotonic() - signalled < grace + 10, "the sidecar did not exit"
            await asyncio.sleep(0.005)
        drain = time.monotonic() - signalled
        burst = set(paths)
        counters = {
            name.rpartition(".")[2]: value
            for name, value in self.envoy.counters("http.ingress_http.ext_authz.").items()
        }
        return Burst(
            statuses,
            paths,
            [d for d in self.decisions() if d.get("path") in burst],
            counters,
            self.sidecar.returncode,
            drain,
        )


@contextlib.contextmanager
def drain_stack(
    fault: FaultOpa,
    workdir: Path,
    *,
    workers: int = 1,
    envoy_fail_open: bool = True,
    grace: float = 5.0,
    grpc_on_unix_socket: bool = False,
) -> Iterator[DrainStack]:
    fault.set(OPA_DENIES)
    grpc_port, http_port, probe_port = free_port(), free_port(), free_port()
    grpc_addr = f"127.0.0.1:{grpc_port}"
    socket_dir = ""
    if grpc_on_unix_socket:
        socket_dir = tempfile.mkdtemp(prefix="ds-")  # short: AF_UNIX paths are limited to about 107 bytes
        grpc_addr = f"unix://{socket_dir}/authz.sock"
    command = serve_command(
        "--opa-url", fault.url,
        "--grpc-addr", grpc_addr,
        "--http-addr", f"127.0.0.1:{http_port}",
        "--probe-addr", f"127.0.0.1:{probe_port}",
        "--ready-without-opa",
        "--workers", str(workers),
        "--shutdown-grace", str(grace),
        "--decision-log", str(workdir / "decisions.jsonl"),
    )  # fmt: skip
    with contextlib.ExitStack() as cleanup:
        if socket_dir:
            cleanup.callback(shutil.rmtree, socket_dir, ignore_errors=True)
        upstream = cleanup.enter_context(EchoUpstream())
        with (workdir / "sidecar.stderr").open("wb") as err:
            sidecar = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO_ROOT, env=child_env()
            )
        cleanup.callback(_stop, sidecar)
        stack_stderr = workdir / "sidecar.stderr"
        deadline = time.monotonic() + 30
        while stack_stderr.read_text(errors="replace").count(READY_LINE) < workers:
            if sidecar.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sidecar did not start:\n{stack_stderr.read_text(errors='replace')}")
            time.sleep(0.02)
        config = render_envoy(local_addresses(upstream.addr, grpc_addr))
        envoy = start_envoy(fail_open(config) if envoy_fail_open else config, workdir / "envoy")
        cleanup.callback(envoy.stop)
        yield DrainStack(sidecar, envoy, workdir, fault)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(5)
