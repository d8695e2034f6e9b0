"""Only the sidecar answers on its ports: no other process, even of the same
user and asking for SO_REUSEPORT, can bind them beside it and take a share of
its connections; and a port that is already taken stops the start (exit 2,
naming the address) instead of being shared."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_opa import FaultOpa
from tests.operations.sidecar_process import REPO_ROOT, child_env, free_port, serve_command

READY_LINE = "serving ext_authz v3 on"


def _intruder(port: int) -> socket.socket:
    """A socket asking for everything that lets a listener share a port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def _serve(fault: FaultOpa, workers: int, ports: dict[str, int], err: Path) -> subprocess.Popen[bytes]:
    command = serve_command(
        "--opa-url", fault.url,
        "--grpc-addr", f"127.0.0.1:{ports['grpc']}",
        "--http-addr", f"127.0.0.1:{ports['http']}",
        "--probe-addr", f"127.0.0.1:{ports['probe']}",
        "--workers", str(workers),
        "--ready-without-opa",
    )  # fmt: skip
    with err.open("wb") as stderr:
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO_ROOT, env=child_env()
        )


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def serving(fault_opa: FaultOpa, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, int]]:
    workers: int = request.param
    ports = {"grpc": free_port(), "http": free_port(), "probe": free_port()}
    err = tmp_path / "stderr.log"
    process = _serve(fault_opa, workers, ports, err)
    try:
        deadline = time.monotonic() + 30
        while err.read_text().count(READY_LINE) < workers:
            assert process.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.02)
        yield ports
    finally:
        process.terminate()
        process.wait(15)


def test_no_other_process_can_bind_a_port_the_sidecar_serves(serving: dict[str, int]) -> None:
    for name, port in serving.items():
        with pytest.raises(OSError) as refused:
            _intruder(port).close()
        assert refused.value.errno == 98, name  # EADDRINUSE


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
@pytest.mark.parametrize("taken", ["grpc", "http", "probe"])
def test_a_taken_port_stops_the_start_with_exit_2(
    fault_opa: FaultOpa, tmp_path: Path, workers: int, taken: str
) -> None:
    ports = {"grpc": free_port(), "http": free_port(), "probe": free_port()}
    flag = {"grpc": "--grpc-addr", "http": "--http-addr", "probe": "--probe-addr"}[taken]
    # Taken the way that lets a listener sharing SO_REUSEPORT join it.
    with _intruder(ports[taken]):
        process = _serve(fault_opa, workers, ports, tmp_path / "stderr.log")
        code = process.wait(30)
    stderr = (tmp_path / "stderr.log").read_text()
    assert code == 2, stderr
    assert f"cannot listen on {flag} 127.0.0.1:{ports[taken]}" in stderr
    assert READY_LINE not in stderr
