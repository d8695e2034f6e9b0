"""Watching processes from the outside, through /proc: open file descriptors, resident
memory, and how long their threads waited for a CPU.

The last one tells a late answer caused by the machine (a thread was ready to run but not
scheduled: other processes had the CPUs) from one caused by the process itself (running,
or blocked on something).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# (start, end, the longest any thread of the process waited for a CPU in between, ns)
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


def connections_to(pid: int, port: int) -> int:
    """How many of the process's open sockets are TCP connections to `port` (IPv4, any
    address): its pooled connections to OPA, told apart from every other descriptor."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)  # the column names
        for row in table:
            columns = row.split()
            remote_port = int(columns[2].rpartition(":")[2], 16)
            found += remote_port == port and columns[9] in inodes
    return found


def established_to(port: int) -> int:
    """Established TCP connections (IPv4) to `port` from any process of this network namespace."""
    with open("/proc/self/net/tcp") as table:
        next(table)
        rows = [row.split() for row in table]
    return sum(int(r[2].rpartition(":")[2], 16) == port and r[3] == "01" for r in rows)


def thread_waits_ns(pid: int) -> dict[int, int]:
    """Run-queue wait so far of each thread of the process, by thread id."""
    waits = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
            waits[int(task)] = int(schedstat.read().split()[1])
    return waits


def longest_wait_ms(before: dict[int, int], after: dict[int, int]) -> float:
    """The longest any one thread waited for a CPU between two `thread_waits_ns` readings."""
    return max((waited - before.get(tid, 0) for tid, waited in after.items()), default=0) / 1e6


class Sampler:
    """Every quarter second, on a background thread: for each named process, the longest
    any of its threads waited for a CPU in that interval; for those in `memory`, the peak
    of open fds and RSS. A process is named by a function returning its current pid, so
    a restarted one is followed."""

    INTERVAL = 0.25

    def __init__(self, processes: dict[str, Callable[[], int]], memory: Iterable[str] = ()) -> None:
        self.processes = processes
        self.memory = list(memory)
        self.peak = {name: sample(processes[name]()) for name in self.memory}
        self.cpu_wait: dict[str, list[CpuWait]] = {name: [] for name in processes}
        self._last: dict[str, tuple[float, dict[int, int]]] = {}
        for name in processes:
            self._read_waits(name)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    def _read_waits(self, name: str) -> None:
        with contextlib.suppress(OSError):
            now, waits = time.monotonic(), thread_waits_ns(self.processes[name]())
            if name in self._last:
                at, before = self._last[name]
                self.cpu_wait[name].append((at, now, round(longest_wait_ms(before, waits) * 1e6)))
            self._last[name] = (now, waits)

    def _run(self) -> None:
        while not self._done.wait(self.INTERVAL):
            for name in self.processes:
                self._read_waits(name)
            for name in self.memory:
                with contextlib.suppress(OSError):
                    now, top = sample(self.processes[name]()), self.peak[name]
                    self.peak[name] = ProcessSample(max(now.fds, top.fds), max(now.rss_kib, top.rss_kib))

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "total_s": round(sum(w for _, _, w in samples) / 1e9, 2),
                "worst_interval_ms": round(max((w for _, _, w in samples), default=0) / 1e6, 1),
            }
            for name, samples in self.cpu_wait.items()
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
