"""--workers N: N worker processes, each with its own event loop and OPA
connections, serve the listening sockets this parent bound; the parent
supervises them.

The parent binds every address once, without SO_REUSEPORT, so no other process
can join the port, and the workers inherit the sockets (TCP or unix, the file
created with --unix-socket-mode and removed when the parent exits): one accept queue each,
from which only a worker whose loop runs takes connections. It decides no check.
It replaces a worker that exits or stops sending heartbeats (sidecar/worker_link.py),
with a backoff that starts over once a worker has run healthily, forwards
SIGTERM/SIGINT (a second one too, which makes the workers deny what is still
waiting) to every worker, including one started while the signal arrived, and
gives the workers one directory for their metrics so each worker's /metrics
serves the sum over all of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from prometheus_client import multiprocess

from sidecar.config import Settings
from sidecar.listen_sockets import (
    bind_exclusive,
    refuse_queued,
    remove_unix_socket_file,
    unix_socket_file,
)
from sidecar.worker_link import FDS_ENV, WORKER_ENV, encode_fds, is_worker

__all__ = ["Supervisor", "is_worker"]

_STARTUP_SECONDS = 2.0  # a worker that exits by itself this soon did not start: stop, do not loop
_FIRST_HEARTBEAT_SECONDS = 20.0  # imports, TLS material, binding: a worker not serving by then is stuck
# A worker whose loop sent nothing for this long is stuck or stopped. Each
# check waits far less (Envoy gives up after 0.25 s); a shorter bound would
# replace workers that a busy machine merely starves for a moment.
HEARTBEAT_TIMEOUT_SECONDS = 2.0
_HEALTHY_SECONDS = 10.0  # a worker that ran this long resets the restart backoff
_MAX_BACKOFF_SECONDS = 5.0
_POLL_SECONDS = 0.05
log = logging.getLogger("sidecar.workers")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL,
    so no worker outlives its supervisor (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    heartbeats: int  # read end of the worker's heartbeat pipe
    started: float
    last_beat: float | None = None

    def silent_for(self, now: float) -> float:
        return now - (self.last_beat if self.last_beat is not None else self.started)

    def stuck(self, now: float) -> bool:
        limit = HEARTBEAT_TIMEOUT_SECONDS if self.last_beat is not None else _FIRST_HEARTBEAT_SECONDS
        return self.silent_for(now) > limit


@dataclass
class _Slot:
    """One worker position: its current process, and when to restart it."""

    worker: _Worker | None = None
    backoff: float = 0.0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self._settings = settings
        self._argv = list(argv)
        self._slots = [_Slot() for _ in range(settings.workers)]
        self._signals: list[int] = []
        self._metrics_dir = ""
        self._listeners: dict[str, socket.socket] = {}
        self._socket_files: list[tuple[str, int, int]] = []  # unix socket files this process created

    def run(self) -> int:
        """Raises ListenError (the caller exits 2) when an address is taken."""
        s = self._settings
        try:
            for name, flag, addr in (
                ("grpc", "--grpc-addr", s.grpc_addr),
                ("http", "--http-addr", s.http_addr),
                ("probe", "--probe-addr", s.probe_addr),
            ):
                sock = self._listeners[name] = bind_exclusive(flag, addr, s.unix_socket_mode)
                created = unix_socket_file(sock)
                if created is not None:
                    self._socket_files.append(created)
            self._metrics_dir = tempfile.mkdtemp(prefix="opa-sidecar-metrics-")
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            for index in range(s.workers):
                self._spawn(index)
            return self._supervise()
        finally:
            for slot in self._slots:
                if slot.worker is not None and slot.worker.process.poll() is None:
                    slot.worker.process.kill()
                    slot.worker.process.wait()
            for sock in self._listeners.values():
                sock.close()
            # As gRPC removes its unix socket file when a single process stops.
            for created in self._socket_files:
                remove_unix_socket_file(created)
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)
        for worker in self._live():
            worker.process.send_signal(signum)
        # New connections are refused from now on, whichever worker would take them.
        grpc = self._listeners.get("grpc")
        if grpc is not None:
            with contextlib.suppress(OSError):
                grpc.shutdown(socket.SHUT_RD)
            if grpc.family == socket.AF_UNIX:
                refuse_queued(grpc)  # a unix listener's shutdown keeps them waiting otherwise

    def _live(self) -> list[_Worker]:
        return [s.worker for s in self._slots if s.worker is not None and s.worker.process.poll() is None]

    def _spawn(self, index: int) -> None:
        beat_read, beat_write = os.pipe()
        os.set_blocking(beat_read, False)
        fds = {name: sock.fileno() for name, sock in self._listeners.items()}
        env = os.environ | {
            WORKER_ENV: str(index),
            FDS_ENV: encode_fds(fds, beat_write),
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
        }
        # A session of its own: a terminal's Ctrl-C reaches the parent only,
        # which forwards it once (a second signal means "deny the rest now").
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "sidecar", *self._argv],
                env=env,
                start_new_session=True,
                pass_fds=(*fds.values(), beat_write),
                preexec_fn=_die_with_parent,  # the parent runs no other threads
            )
        finally:
            os.close(beat_write)
        self._slots[index].worker = _Worker(index, child, beat_read, time.monotonic())
        log.info("worker %d started (pid %d)", index, child.pid)
        # A signal that came while the worker was being started reached only the others.
        for signum in self._signals:
            child.send_signal(signum)

    def _supervise(self) -> int:
        while not self._signals:
            self._read_heartbeats(_POLL_SECONDS)
            now = time.monotonic()
            for index, slot in enumerate(self._slots):
                worker = slot.worker
                if worker is None:
                    if slot.restart_at is not None and now >= slot.restart_at and not self._signals:
                        slot.restart_at = None
                        self._spawn(index)
                    continue
                if worker.process.poll() is None and worker.stuck(now):
                    log.error(
                        "worker %d (pid %d) sent no heartbeat for %.1f s; replacing it",
                        index,
                        worker.process.pid,
                        worker.silent_for(now),
                    )
                    worker.process.kill()
                    worker.process.wait()
                code = worker.process.poll()
                if code is None:
                    continue
                self._retire(slot)
                if self._signals:
                    break
                # Exiting by itself that soon (bad config, TLS material) would only
                # repeat; being killed (a negative code) is what restarts are for.
                if code == 2 or (code > 0 and now - worker.started < _STARTUP_SECONDS):
                    log.error("worker %d exited with %d while starting; stopping", index, code)
                    self._stop_all()
                    return code or 1
                ran = now - worker.started
                slot.backoff = _next_backoff(slot.backoff, ran)
                slot.restart_at = now + slot.backoff
                log.error(
                    "worker %d (pid %d) ended with %d after %.1f s; restarting in %.1f s",
                    index,
                    worker.process.pid,
                    code,
                    ran,
                    slot.backoff,
                )
        return self._wait_all()

    def _retire(self, slot: _Slot) -> None:
        worker = slot.worker
        assert worker is not None
        multiprocess.mark_process_dead(worker.process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        os.close(worker.heartbeats)
        slot.worker = None

    def _read_heartbeats(self, timeout: float) -> None:
        workers = {w.heartbeats: w for w in self._live()}
        try:
            ready, _, _ = select.select(list(workers), [], [], timeout)
        except InterruptedError:  # a signal: the loop looks at it first
            return
        now = time.monotonic()
        for fd in ready:
            with contextlib.suppress(BlockingIOError):
                if os.read(fd, 4096):
                    workers[fd].last_beat = now

    def _stop_all(self) -> None:
        for worker in self._live():
            worker.process.terminate()
        self._wait_all()

    def _wait_all(self) -> int:
        # Workers answer what they received within --shutdown-grace, then exit.
        deadline = time.monotonic() + self._settings.shutdown_grace + 5.0
        codes: list[int] = []
        for slot in self._slots:
            worker = slot.worker
            if worker is None:
                continue
            try:
                codes.append(worker.process.wait(max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes.append(worker.process.wait())
            self._retire(slot)
        # A worker still starting when the signal came had nothing in flight:
        # ending by the signal's default action is a clean stop too.
        clean = (0, -signal.SIGTERM, -signal.SIGINT)
        return 0 if all(code in clean for code in codes) else 1


def _next_backoff(previous: float, ran: float) -> float:
    """A worker that ran healthily restarts at once; one that keeps failing, ever later."""
    if ran >= _HEALTHY_SECONDS:
        return 0.0
    return min(max(previous * 2, 0.1), _MAX_BACKOFF_SECONDS)
