"""--workers N: processes share the ports (TCP or unix sockets), metrics add up across them, a dead
or stopped worker is replaced (and a stopped one gets no new connection
meanwhile), and SIGTERM stops them all cleanly, even during a restart backoff."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from sidecar.cli import build_parser
from sidecar.config import ListenAddress, settings_from
from sidecar.listen_sockets import bind_exclusive, refuse_queued
from sidecar.worker_link import HEARTBEAT_INTERVAL_SECONDS
from sidecar.workers import HEARTBEAT_TIMEOUT_SECONDS, Supervisor, _next_backoff
from tests.check_requests import check_request
from tests.fault_opa import FaultOpa
from tests.operations.sidecar_process import SidecarProcess
from tests.tls.certs import Pki

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; only its reaping is pending


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(p) for p in text)
    return found


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def many_checks(target: str, n: int) -> list[int]:
    # Separate channels (TCP connections) so the kernel spreads them over workers.
    async def one_channel(count: int) -> list[int]:
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
            codes = []
            for _ in range(count):
                response: CheckResponse = await stub.Check(check_request(), timeout=5)
                codes.append(response.status.code)
            return codes

    results = await asyncio.gather(*(one_channel(n // 10) for _ in range(10)))
    return [code for codes in results for code in codes]


def scrape(probe_port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def workers(fault_opa: FaultOpa, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    grpc_port, http_port, probe_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--opa-url",
            fault_opa.url,
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--http-addr",
            f"127.0.0.1:{http_port}",
            "--probe-addr",
            f"127.0.0.1:{probe_port}",
            "--workers",
            "2",
            "--ready-without-opa",
            "--decision-log",
            str(tmp_path / "decisions.jsonl"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr.log").open("wb"),
    )
    proc.grpc_port, proc.probe_port = grpc_port, probe_port  # type: ignore[attr-defined]
    proc.stderr_path = tmp_path / "stderr.log"  # type: ignore[attr-defined]

    def serving() -> bool:
        # The parent's socket takes connections before any worker serves them:
        # wait for each worker to say it serves.
        ready = (tmp_path / "stderr.log").read_text().count("serving ext_authz v3 on")
        return ready == 2 and len(children(proc.pid)) == 2

    wait_for(serving)
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(15)


def test_two_workers_share_the_port_and_their_metrics(workers: subprocess.Popen[bytes]) -> None:
    port, probe_port = workers.grpc_port, workers.probe_port  # type: ignore[attr-defined]
    codes = asyncio.run(many_checks(f"127.0.0.1:{port}", 200))
    assert codes == [0] * 200
    # Whichever worker answers /metrics reports the sum over both.
    for _ in range(4):
        assert scrape(probe_port, 'opa_sidecar_checks_total{outcome="allow"') == 200
    assert len(children(workers.pid)) == 2


def test_a_dead_worker_is_replaced(workers: subprocess.Popen[bytes]) -> None:
    port = workers.grpc_port  # type: ignore[attr-defined]
    before = children(workers.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(workers.pid) - {victim}) == 2)
    assert victim not in children(workers.pid)
    assert asyncio.run(many_checks(f"127.0.0.1:{port}", 50)) == [0] * 50


def test_workers_die_with_a_killed_supervisor(workers: subprocess.Popen[bytes]) -> None:
    pids = children(workers.pid)
    workers.kill()
    workers.wait()
    wait_for(lambda: not any(alive(pid) for pid in pids))


def test_sigterm_stops_every_worker_and_exits_0(workers: subprocess.Popen[bytes]) -> None:
    pids = children(workers.pid)
    workers.send_signal(signal.SIGTERM)
    assert workers.wait(15) == 0
    assert not any(alive(pid) for pid in pids)


def accepted_by(pids: set[int], path: str) -> dict[int, int]:
    """How many connections to the unix socket at ``path`` each process holds.

    An accepted unix socket carries its listener's path (/proc/net/unix lists
    it, state 03: connected); a client's is unnamed. Each is open in the
    worker that accepted it."""
    accepted = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[7] == path and fields[5] == "03":
            accepted.add(f"socket:[{fields[6]}]")
    counts = dict.fromkeys(pids, 0)
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                counts[pid] += os.readlink(fd) in accepted
    return counts


async def checks_held_open(target: str, channels: int) -> tuple[list[int], list[grpc.aio.Channel]]:
    """One check on each of ``channels`` new connections, left open to be counted."""
    opened = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]

    async def check(channel: grpc.aio.Channel) -> int:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        response: CheckResponse = await stub.Check(check_request(), timeout=5)
        return int(response.status.code)

    return list(await asyncio.gather(*(check(c) for c in opened))), opened


def http_check_over(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"GET /ext_authz/x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        return sock.recv(64).split(b"\r\n", 1)[0]


def test_workers_serve_unix_sockets_created_with_their_mode(fault_opa: FaultOpa) -> None:
    # Short: AF_UNIX paths are limited to about 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="wu-"))
    grpc_sock, http_sock, probe_sock = (str(directory / f"{name}.sock") for name in ("g", "h", "p"))
    Path(grpc_sock).touch()  # a file that is no socket is not replaced: the start stops
    Path(http_sock).touch()
    argv = [sys.executable, "-m", "sidecar", "serve", "--opa-url", fault_opa.url, "--workers", "2"]
    argv += ["--grpc-addr", f"unix://{grpc_sock}", "--http-addr", f"unix://{http_sock}"]
    argv += ["--probe-addr", f"unix://{probe_sock}", "--unix-socket-mode", "0640", "--ready-without-opa"]
    argv += ["--decision-log", str(directory / "d.jsonl")]
    try:
        refused = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=30, check=False)
        assert refused.returncode == 2
        assert f"cannot listen on --grpc-addr unix://{grpc_sock}".encode() in refused.stderr
        assert not Path(probe_sock).exists()  # nothing bound, nothing left
        os.remove(grpc_sock)
        os.remove(http_sock)
        with socket.socket(socket.AF_UNIX) as stale:  # a socket file left behind is replaced
            stale.bind(http_sock)
        stderr = directory / "stderr.log"
        # umask 0: the mode must come from the flag, not from what the process inherits.
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr.open("wb"), umask=0)
        try:
            wait_for(lambda: stderr.read_text().count("serving ext_authz v3 on") == 2, timeout=30)
            pids = children(proc.pid)
            assert len(pids) == 2
            modes = {path: stat.S_IMODE(os.stat(path).st_mode) for path in (grpc_sock, http_sock, probe_sock)}
            assert modes == dict.fromkeys(modes, 0o640)
            assert all(stat.S_ISSOCK(os.stat(path).st_mode) for path in modes)

            async def both_workers() -> tuple[list[int], dict[int, int]]:
                codes, channels = await checks_held_open(f"unix://{grpc_sock}", 20)
                try:
                    return codes, accepted_by(pids, grpc_sock)
                finally:
                    for channel in channels:
                        await channel.close(None)

            codes, held = asyncio.run(both_workers())
            assert codes == [0] * 20
            assert sum(held.values()) == 20
            assert all(count > 0 for count in held.values()), held
            assert [http_check_over(http_sock) for _ in range(10)] == [b"HTTP/1.1 200 OK"] * 10
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not any(alive(pid) for pid in pids)
        # The parent removes the socket files it created, as gRPC does in one process.
        assert not any(Path(path).exists() for path in modes)
        assert len((directory / "d.jsonl").read_text().splitlines()) == 20 + 10
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_shut_unix_listener_closes_what_waits_in_its_queue(tmp_path: Path) -> None:
    # On SIGTERM the parent shuts the gRPC listener. A TCP listener then resets the
    # connections no worker accepted yet; a unix one only refuses new ones.
    path = str(tmp_path / "q.sock")
    listener = bind_exclusive("--grpc-addr", ListenAddress(unix_path=path), 0o600)
    with listener, socket.socket(socket.AF_UNIX) as waiting, socket.socket(socket.AF_UNIX) as late:
        waiting.connect(path)
        waiting.settimeout(1)
        listener.shutdown(socket.SHUT_RD)
        with pytest.raises(ConnectionRefusedError):
            late.connect(path)
        assert refuse_queued(listener) == 1
        assert waiting.recv(1) == b""  # at once, not when the listener closes


async def check_on_a_new_connection(target: str, timeout: float) -> int | None:
    """One check on a connection of its own: the status code, or None if unanswered in time."""
    async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        try:
            response: CheckResponse = await stub.Check(check_request(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
        return int(response.status.code)


def test_a_stopped_worker_gets_no_new_connection_and_is_replaced(workers: subprocess.Popen[bytes]) -> None:
    target = f"127.0.0.1:{workers.grpc_port}"  # type: ignore[attr-defined]
    victim = min(children(workers.pid))
    os.kill(victim, signal.SIGSTOP)  # as a stuck event loop: alive, answering nothing
    stopped = time.monotonic()

    async def while_stopped() -> tuple[list[int | None], float]:
        # Envoy's timeout: an answer later than this is no answer.
        codes = [await check_on_a_new_connection(target, 0.25)]
        while victim in children(workers.pid):
            codes.append(await check_on_a_new_connection(target, 0.25))
        return codes, time.monotonic() - stopped

    try:
        codes, replaced_after = asyncio.run(while_stopped())
    finally:
        if alive(victim):
            os.kill(victim, signal.SIGKILL)
    # Every new connection went to the running worker, which answered in time
    # (a deny is an answer: a first check may find OPA's connection still opening).
    assert None not in codes
    assert len(codes) > 10
    # Its last heartbeat came up to one interval before it stopped.
    earliest = HEARTBEAT_TIMEOUT_SECONDS - HEARTBEAT_INTERVAL_SECONDS
    assert earliest <= replaced_after < HEARTBEAT_TIMEOUT_SECONDS + 1.0
    stderr = workers.stderr_path.read_text()  # type: ignore[attr-defined]
    assert f"(pid {victim}) sent no heartbeat for" in stderr
    wait_for(lambda: len(children(workers.pid)) == 2)
    assert asyncio.run(many_checks(target, 50)) == [0] * 50


def test_sigterm_during_a_restart_backoff_stops_everything_with_exit_0(
    workers: subprocess.Popen[bytes],
) -> None:
    # The same worker dying soon after each start pushes its backoff up: 0.1, 0.2, 0.4, 0.8 s.
    victim = min(children(workers.pid))
    for _ in range(4):
        before = children(workers.pid)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children(workers.pid) - {victim}) == 2)  # noqa: B023
        (victim,) = children(workers.pid) - before
    os.kill(victim, signal.SIGKILL)  # its restart is due in 1.6 s
    time.sleep(0.3)
    assert len(children(workers.pid)) == 1  # waiting out the backoff
    workers.send_signal(signal.SIGTERM)
    assert workers.wait(10) == 0
    stderr = workers.stderr_path.read_text()  # type: ignore[attr-defined]
    assert "restarting in 1.6 s" in stderr
    assert stderr.count("started (pid") == 2 + 4  # none after the signal


def test_the_restart_backoff_grows_while_workers_fail_and_resets_after_a_healthy_run() -> None:
    backoff = 0.0
    seen = []
    for _ in range(8):
        backoff = _next_backoff(backoff, ran=0.5)
        seen.append(backoff)
    assert seen == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert _next_backoff(5.0, ran=10.0) == 0.0


async def test_mutual_tls_passes_through_the_workers_relay(
    fault_opa: FaultOpa, pki: Pki, tmp_path: Path
) -> None:
    # The workers relay the shared socket's bytes to their own gRPC server, which
    # ends TLS: the client certificate is still verified there.
    child = SidecarProcess.start(
        tmp_path,
        fault_opa.url,
        "--workers", "2",
        "--grpc-tls-cert", str(pki.server.cert),
        "--grpc-tls-key", str(pki.server.key),
        "--grpc-client-ca", str(pki.ca),
    )  # fmt: skip

    async def check(with_client_certificate: bool) -> int | None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client.key.read_bytes() if with_client_certificate else None,
            certificate_chain=pki.client.cert.read_bytes() if with_client_certificate else None,
        )
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.secure_channel(child.grpc_target, credentials, options=options) as channel:
            stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
            try:
                response: CheckResponse = await stub.Check(check_request(), timeout=5)
            except grpc.aio.AioRpcError:
                return None
            return int(response.status.code)

    try:
        trusted = [await check(True) for _ in range(10)]
        anonymous = await check(False)
    finally:
        child.signal()
        child.wait(15)
    assert trusted == [0] * 10
    assert anonymous is None


def test_a_worker_started_as_a_signal_arrives_gets_it_too(fault_opa: FaultOpa, tmp_path: Path) -> None:
    # The signal handler forwards to the workers it knows; one being started at
    # that moment is not among them, so it gets the signals when it is started.
    argv = ["serve", "--opa-url", fault_opa.url, "--workers", "2", "--ready-without-opa"]
    argv += ["--grpc-addr", f"127.0.0.1:{free_port()}", "--http-addr", f"127.0.0.1:{free_port()}"]
    argv += ["--probe-addr", f"127.0.0.1:{free_port()}", "--decision-log", str(tmp_path / "d.jsonl")]
    supervisor = Supervisor(settings_from(build_parser().parse_args(argv), env={}), argv)
    supervisor._on_signal(signal.SIGTERM, None)  # no worker yet
    supervisor._metrics_dir = str(tmp_path)
    supervisor._spawn(0)
    worker = supervisor._slots[0].worker
    assert worker is not None
    try:
        code = worker.process.wait(20)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        os.close(worker.heartbeats)
    assert code in (0, -signal.SIGTERM)
