"""The processes a chaos run assembles, each one a real process: the echo upstream, the
OPA stand-in with a decision record (killed, restarted, paused), and sidecars each behind
two real Envoys of the deploy/envoy configuration, one as shipped (fail closed) and one
with `failure_mode_allow: true`."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.local_stack import EnvoyProcess, SidecarProcess, local_addresses, start_envoy, start_sidecar
from deploy.render import render_envoy
from tests.e2e.stack import fail_open
from tests.fixtures.opa import REPO_ROOT

POLICY = Path(__file__).parent / "policies" / "chaos.rego"
START_TIMEOUT = 30.0
ENVOY_MODES = ("fail-closed", "fail-open")


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def _announced(process: subprocess.Popen[bytes], what: str, timeout: float = START_TIMEOUT) -> str:
    """The address from the `listening on ADDR` line a server prints when ready."""
    assert process.stdout is not None
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"{what} did not start (exit status {process.poll()})")
            if selector.select(min(remaining, 0.2)):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk and process.poll() is not None:
                    continue
                buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"{what} printed {line!r}")
    return line.removeprefix("listening on ")


class EchoProcess:
    """deploy/echo_upstream.py as a process (it keeps no record of what it served)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy.echo_upstream", "--addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=_env(),
        )
        self.addr = _announced(self.process, "echo upstream")

    def stop(self) -> None:
        _terminate(self.process)


class RecordingOpa:
    """tests.adversarial.recording_opa serving the chaos policy; restarts keep its port,
    so the sidecar's --opa-url stays right."""

    def __init__(self, workdir: Path) -> None:
        self.record = workdir / "opa-yes.txt"
        self.log = workdir / "opa.log"
        self.addr = "127.0.0.1:0"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.adversarial.recording_opa", "--addr", self.addr]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--record", str(self.record), str(POLICY)],
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
                env=_env(),
            )
        self.addr = _announced(self.process, "the OPA stand-in")
        self.starts += 1

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no drain (a crash, an OOM kill)."""
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(START_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self) -> None:
        if self.process is not None:
            self.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            _terminate(self.process)

    def yes_markers(self) -> set[str]:
        return set(self.record.read_text().split()) if self.record.exists() else set()


@dataclass
class GuardedSidecar:
    """One sidecar process, and an Envoy in front of it per failure mode."""

    name: str
    sidecar: SidecarProcess
    envoys: dict[str, EnvoyProcess]

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.sidecar.stop()


def start_guarded(
    name: str, opa_url: str, upstream: str, workdir: Path, sidecar_args: Sequence[str] = ()
) -> GuardedSidecar:
    directory = workdir / name
    sidecar = start_sidecar(opa_url, directory, extra_args=sidecar_args)
    envoys: dict[str, EnvoyProcess] = {}
    try:
        config = render_envoy(local_addresses(upstream, sidecar.grpc_addr))
        for mode in ENVOY_MODES:
            envoys[mode] = start_envoy(
                config if mode == "fail-closed" else fail_open(config), directory / mode
            )
    except BaseException:
        GuardedSidecar(name, sidecar, envoys).stop()
        raise
    return GuardedSidecar(name, sidecar, envoys)


def _terminate(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if process.stdout is not None:
        process.stdout.close()
