"""Watching a process from the outside, through /proc: open file descriptors, resident
memory, and how long its main thread (the sidecar's event loop) waited for a CPU.

The last one tells a slow answer caused by the machine (the process was ready to run but
not scheduled) from one caused by the process itself (running, or blocked on something).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

# (start, end, nanoseconds the main thread waited for a CPU in between)
CpuWait = tuple[float, float, int]


@dataclass(frozen=True)
class ProcessSample:
    fds: int
    rss_kib: int


def sample(pid: int) -> ProcessSample:
    """Open file descriptors and resident memory of a live process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return ProcessSample(fds, rss)


def runqueue_wait_ns(pid: int) -> int:
    """Time the process's main thread (the sidecar's event loop) has spent ready to run
    but waiting for a CPU (/proc/PID/schedstat, second field)."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[1])


def all_threads_runqueue_wait_ns(pid: int) -> int:
    """The same, summed over every thread of the process."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
            total += int(schedstat.read().split()[1])
    return total


class Sampler:
    """Processes' fds and RSS (their peaks) and their main threads' CPU wait, every quarter
    second, on a background thread; processes are named by the caller."""

    INTERVAL = 0.25

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = {side: sample(pid) for side, pid in pids.items()}
        self.cpu_wait: dict[str, list[CpuWait]] = {side: [] for side in pids}
        self._last = {side: (time.monotonic(), runqueue_wait_ns(pid)) for side, pid in pids.items()}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.INTERVAL):
            for side, pid in self.pids.items():
                with contextlib.suppress(OSError):
                    now, top = sample(pid), self.peak[side]
                    self.peak[side] = ProcessSample(max(now.fds, top.fds), max(now.rss_kib, top.rss_kib))
                    at, waited = time.monotonic(), runqueue_wait_ns(pid)
                    last_at, last_waited = self._last[side]
                    self.cpu_wait[side].append((last_at, at, waited - last_waited))
                    self._last[side] = (at, waited)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            side: {
                "total_s": round(sum(w for _, _, w in samples) / 1e9, 2),
                "worst_interval_ms": round(max((w for _, _, w in samples), default=0) / 1e6, 1),
            }
            for side, samples in self.cpu_wait.items()
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)


def cpu_waited_ms(samples: Sequence[CpuWait], sent: float, done: float) -> float:
    """Milliseconds of CPU wait in the samples that overlap [sent, done] (monotonic times)."""
    first = bisect.bisect_left(samples, (sent, 0.0, 0)) - 1
    total = 0
    for start, end, waited in samples[max(first, 0) :]:
        if start > done:
            break
        if end >= sent:
            total += waited
    return total / 1e6
