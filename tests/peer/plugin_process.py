"""The OPA-Envoy plugin (`opa-envoy-plugin run --server`) as a process, with its gRPC
ext_authz server on a loopback port.

The binary is `$OPA_ENVOY_PLUGIN_BIN`, else the one `scripts/install-opa-envoy-plugin.sh`
puts in `.tools/bin/`. It is a peer to compare with, never something the sidecar needs.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.opa import REPO_ROOT

TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
START_TIMEOUT = 30.0


def plugin_binary() -> str | None:
    if "OPA_ENVOY_PLUGIN_BIN" in os.environ:
        return os.environ["OPA_ENVOY_PLUGIN_BIN"] or None
    installed = TOOLS_BIN / "opa-envoy-plugin"
    return str(installed) if os.access(installed, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PluginProcess:
    process: subprocess.Popen[bytes]
    grpc_target: str
    http_port: int
    workdir: Path

    def log(self) -> str:
        return (self.workdir / "plugin.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _ready(port: int) -> bool:
    # `?plugins` turns 200 once the ext_authz gRPC server is serving.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("GET", "/health?plugins")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def start_plugin(
    binary: str,
    decision_path: str,
    paths: Sequence[str | os.PathLike[str]],
    settings: Sequence[str] = (),
) -> PluginProcess:
    """``settings``: more ``key=value`` of the plugin's configuration (``proto-descriptor=...``)."""
    workdir = Path(tempfile.mkdtemp(prefix="opa-envoy-plugin-"))
    http_port, grpc_port = _free_port(), _free_port()
    command = [
        binary, "run", "--server", "--addr", f"127.0.0.1:{http_port}", "--skip-version-check",
        "--log-level=error",
        f"--set=plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{grpc_port}",
        f"--set=plugins.envoy_ext_authz_grpc.path={decision_path}",
        *(f"--set=plugins.envoy_ext_authz_grpc.{setting}" for setting in settings),
        *(str(Path(p).resolve()) for p in paths),
    ]  # fmt: skip
    with (workdir / "plugin.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    plugin = PluginProcess(process, f"127.0.0.1:{grpc_port}", http_port, workdir)
    deadline = time.monotonic() + START_TIMEOUT
    while not _ready(http_port):
        if process.poll() is not None or time.monotonic() > deadline:
            log_text = plugin.log()
            with contextlib.suppress(Exception):
                plugin.stop()
            raise RuntimeError(f"opa-envoy-plugin did not start:\n{log_text}")
        time.sleep(0.05)
    return plugin
