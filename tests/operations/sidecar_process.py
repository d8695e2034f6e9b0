"""`python -m sidecar serve` as a child process, for what only a real process
shows: exit codes, signals, and everything it writes to stdout and stderr."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.local_stack import settled_log

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "serving ext_authz v3 on"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "serve", *args]


def child_env() -> dict[str, str]:
    """The test's environment without OPA_SIDECAR_* settings, so only flags count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPA_SIDECAR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


@dataclass
class SidecarProcess:
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    grpc_target: str
    http_port: int
    probe_port: int

    @classmethod
    def start(cls, workdir: Path, opa_url: str, *flags: str, timeout: float = 20.0) -> SidecarProcess:
        """Start on free ports and wait for the 'serving' line on stderr."""
        grpc_port, http_port, probe_port = free_port(), free_port(), free_port()
        stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
        command = serve_command(
            "--opa-url",
            opa_url,
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--http-addr",
            f"127.0.0.1:{http_port}",
            "--probe-addr",
            f"127.0.0.1:{probe_port}",
            *flags,
        )
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO_ROOT, env=child_env())
        child = cls(process, stdout_path, stderr_path, f"127.0.0.1:{grpc_port}", http_port, probe_port)
        deadline = time.monotonic() + timeout
        while READY_LINE not in child.stderr():
            if process.poll() is not None or time.monotonic() > deadline:
                child.kill()
                raise RuntimeError(f"sidecar did not start (exit {process.returncode}):\n{child.stderr()}")
            time.sleep(0.02)
        return child

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def decisions(self) -> list[dict[str, Any]]:
        return settled_log(self.stdout_path.read_bytes)

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
