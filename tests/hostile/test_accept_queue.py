"""Every listener of the sidecar queues a burst of connections its loop has not
accepted yet.

A client that connects faster than the loop accepts (many at once, or while the
loop is busy with a large request) fills the kernel's accept queue. Then the
kernel drops the next SYN, the connecting side retries it a second later, and
Envoy's connect timeout (0.25 s in the shipped configurations) has long passed:
its next new connection to the sidecar fails, an error a fail-open Envoy lets
through. Here the sidecar is stopped (SIGSTOP: nothing is accepted at all)
while a burst ten times the event loop's default queue (100) connects to each
of its listeners; every connection must be queued by the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.raw_http import exchange
from tests.operations.sidecar_process import READY_LINE, REPO_ROOT, child_env, free_port, serve_command

# Ten times the loop's default queue, within what the kernel allows
# (net.core.somaxconn, 4096 on current kernels) and what this process may open.
_SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())
_HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
if _HARD_NOFILE == resource.RLIM_INFINITY:
    _HARD_NOFILE = 1 << 20
_SPARE_DESCRIPTORS = 256
BURST = min(1000, _SOMAXCONN, _HARD_NOFILE - _SPARE_DESCRIPTORS)
# A queued connection completes its handshake at once on loopback; a dropped
# SYN would be retried only after a second.
HANDSHAKE_WAIT_S = 0.5
LISTENERS = ("--grpc-addr", "--http-addr", "--probe-addr")


def _addresses(layout: str, workdir: Path) -> dict[str, str]:
    if layout.endswith("unix"):
        return {flag: f"unix://{workdir}/{flag.strip('-')}.sock" for flag in LISTENERS}
    return {flag: f"127.0.0.1:{free_port()}" for flag in LISTENERS}


@contextlib.contextmanager
def _sidecar(workdir: Path, addresses: dict[str, str], workers: int) -> Iterator[subprocess.Popen[bytes]]:
    flags = [part for flag, addr in addresses.items() for part in (flag, addr)]
    command = serve_command("--opa-url", "http://127.0.0.1:9", *flags, "--workers", str(workers))
    stderr = workdir / "stderr.log"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=REPO_ROOT,
            env=child_env(),
            start_new_session=True,  # one signal reaches the parent and its workers
        )
    try:
        deadline = time.monotonic() + 30
        while stderr.read_text(errors="replace").count(READY_LINE) < workers:
            assert process.poll() is None and time.monotonic() < deadline, stderr.read_text(errors="replace")
            time.sleep(0.05)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _target(addr: str) -> str | tuple[str, int]:
    if addr.startswith("unix://"):
        return addr.removeprefix("unix://")
    host, _, port = addr.rpartition(":")
    return host, int(port)


def _connect_burst(addr: str, count: int) -> tuple[int, list[socket.socket]]:
    """Start `count` connections; return how many the kernel completed."""
    target = _target(addr)
    family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
    socks: list[socket.socket] = []
    pending: set[socket.socket] = set()
    completed = 0
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        socks.append(sock)
        error = sock.connect_ex(target)
        if error == 0:
            completed += 1
        elif error == errno.EINPROGRESS:  # the TCP handshake is under way
            pending.add(sock)
        # Anything else (EAGAIN: a unix listener's queue is full) is not queued.
    deadline = time.monotonic() + HANDSHAKE_WAIT_S
    poller = select.poll()
    for sock in pending:
        poller.register(sock, select.POLLOUT)
    by_fd = {sock.fileno(): sock for sock in pending}
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(50):
            sock = by_fd.pop(fd)
            poller.unregister(fd)
            completed += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    return completed, socks


@pytest.fixture
def descriptors_for_a_burst() -> Iterator[None]:
    """One burst's sockets open at once, whatever soft limit the test started with."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = BURST + _SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("descriptors_for_a_burst")
@pytest.mark.parametrize("layout", ["tcp", "unix", "workers-tcp"])
def test_a_stopped_sidecar_queues_a_burst_on_every_listener(layout: str, tmp_path: Path) -> None:
    addresses = _addresses(layout, tmp_path)
    workers = 2 if layout.startswith("workers") else 1
    queued = {}
    with _sidecar(tmp_path, addresses, workers) as process:
        os.killpg(process.pid, signal.SIGSTOP)
        try:
            for flag, addr in addresses.items():
                queued[flag], socks = _connect_burst(addr, BURST)
                for sock in socks:
                    sock.close()
        finally:
            os.killpg(process.pid, signal.SIGCONT)
        assert queued == dict.fromkeys(LISTENERS, BURST)
        # And the sidecar serves on after the burst.
        probe = _target(addresses["--probe-addr"])
        assert exchange(probe, b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n", timeout=10).status == 200
