"""--workers N: N worker processes share the listening ports (SO_REUSEPORT), each
with its own event loop and OPA connections; this parent supervises them.

The parent binds nothing and decides nothing. It restarts a worker that dies,
forwards SIGTERM/SIGINT (a second one too, which makes the workers deny what
is still waiting), and gives the workers one directory for their metrics so
each worker's /metrics serves the sum over all of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType

from prometheus_client import multiprocess

from sidecar.config import Settings

WORKER_ENV = "OPA_SIDECAR_WORKER_INDEX"
_STARTUP_SECONDS = 2.0  # a worker that dies this soon did not start: stop, do not loop
_MAX_BACKOFF_SECONDS = 5.0
log = logging.getLogger("sidecar.workers")


def is_worker() -> bool:
    return WORKER_ENV in os.environ


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL,
    so no worker outlives its supervisor (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self._settings = settings
        self._argv = list(argv)
        self._workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self._signals = 0
        self._metrics_dir = ""

    def _spawn(self, index: int) -> None:
        env = os.environ | {WORKER_ENV: str(index), "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        # A session of its own: a terminal's Ctrl-C reaches the parent only,
        # which forwards it once (a second signal means "deny the rest now").
        child = subprocess.Popen(
            [sys.executable, "-m", "sidecar", *self._argv],
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # the parent runs no other threads
        )
        self._workers[index] = (child, time.monotonic())
        log.info("worker %d started (pid %d)", index, child.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        for child, _ in self._workers.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        self._metrics_dir = tempfile.mkdtemp(prefix="opa-sidecar-metrics-")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for index in range(self._settings.workers):
                self._spawn(index)
            return self._supervise()
        finally:
            for child, _ in self._workers.values():
                if child.poll() is None:
                    child.kill()
                    child.wait()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _supervise(self) -> int:
        backoff = 0.0
        while not self._signals:
            for index, (child, started) in list(self._workers.items()):
                code = child.poll()
                if code is None:
                    continue
                multiprocess.mark_process_dead(child.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
                if self._signals:
                    break
                # Exiting by itself that soon (bad config, port taken) would only
                # repeat; being killed (a negative code) is what restarts are for.
                if code == 2 or (code > 0 and time.monotonic() - started < _STARTUP_SECONDS):
                    log.error("worker %d exited with %d while starting; stopping", index, code)
                    self._stop_all()
                    return code or 1
                backoff = min(max(backoff * 2, 0.1), _MAX_BACKOFF_SECONDS)
                log.error(
                    "worker %d (pid %d) exited with %d; restarting in %.1f s", index, child.pid, code, backoff
                )
                time.sleep(backoff)
                self._spawn(index)
            time.sleep(0.1)
        return self._wait_all()

    def _stop_all(self) -> None:
        for child, _ in self._workers.values():
            if child.poll() is None:
                child.terminate()
        self._wait_all()

    def _wait_all(self) -> int:
        # Workers answer what is in flight within --shutdown-grace, then exit.
        deadline = time.monotonic() + self._settings.shutdown_grace + 5.0
        codes = []
        for child, _ in self._workers.values():
            try:
                codes.append(child.wait(max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                child.kill()
                codes.append(child.wait())
        # A worker still starting when the signal came had nothing in flight:
        # ending by the signal's default action is a clean stop too.
        clean = (0, -signal.SIGTERM, -signal.SIGINT)
        return 0 if all(code in clean for code in codes) else 1
