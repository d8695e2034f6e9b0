"""The processes a chaos run assembles, each one a real process: the echo upstream, OPA
(the real one when there is one, else the stand-in) with a decision record (killed,
restarted, paused), and sidecars each behind
two real Envoys of the deploy/envoy configuration, one as shipped (fail closed) and one
with `failure_mode_allow: true`."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.local_stack import (
    EnvoyProcess,
    SidecarProcess,
    free_port,
    local_addresses,
    start_envoy,
    start_sidecar,
)
from deploy.render import render_envoy
from tests.adversarial.recording_opa import yes_marker
from tests.e2e.stack import fail_open
from tests.fixtures.opa import REPO_ROOT, opa_binary

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


# The decision log keeps each answer, not what was asked: the chaos policy's marker is in it.
_MASK_INPUT = 'package system.log\n\nimport rego.v1\n\nmask contains "/input"\n'


class RecordingOpa:
    """The chaos policy on an OPA that records every yes it sends before the answer leaves;
    restarts keep its port, so the sidecar's --opa-url stays right.

    The real `opa run --server` when there is one: its console decision log, written
    synchronously before each answer and unbuffered, is the record. Else the stand-in
    tests.adversarial.recording_opa, which appends each yes to a file itself."""

    def __init__(self, workdir: Path) -> None:
        self.binary = opa_binary()
        self.record = workdir / ("opa-decisions.jsonl" if self.binary else "opa-yes.txt")
        self.log = workdir / "opa.log"
        self.mask = workdir / "mask_input.rego"
        self.addr = "127.0.0.1:0"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def kind(self) -> str:
        return "opa run --server" if self.binary else "the OPA stand-in"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        if self.binary:
            self._start_real(self.binary)
            return
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

    def _start_real(self, binary: str) -> None:
        if self.addr.endswith(":0"):
            self.addr = f"127.0.0.1:{free_port()}"
            self.mask.write_text(_MASK_INPUT)
        command = [binary, "run", "--server", "--addr", self.addr, "--skip-version-check"]
        command += ["--log-level=info", "--log-format=json", "--set=decision_logs.console=true"]
        with self.record.open("ab") as record, self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, str(POLICY), str(self.mask)], stdout=log, stderr=record, cwd=REPO_ROOT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_health(self.addr):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(
                    f"opa run did not start (exit status {self.process.poll()}): see {self.log}"
                )
            time.sleep(0.05)
        self.starts += 1

    def yes_markers(self) -> set[str]:
        if not self.record.exists():
            return set()
        if not self.binary:
            return set(self.record.read_text().split())
        markers: set[str] = set()
        for line in self.record.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("msg") == "Decision Log" and "result" in event:
                    marker = yes_marker(json.dumps({"result": event["result"]}).encode())
                    if marker is not None:
                        markers.add(marker)
        return markers


def _answers_health(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=1.0)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


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
