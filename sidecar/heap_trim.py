"""Handing the C heap's free pages back to the system.

glibc's malloc keeps what C code frees inside its heaps, for reuse, and gives
back on its own only the free space at a heap's top. A flood of HTTP/2 streams
that the client resets at once (rapid reset) makes gRPC hold tens of MiB for
the streams in flight; when they end that memory is free but stays resident,
held in place by small blocks gRPC never frees: grpc.aio keeps the 80-byte
operation array of every call cancelled before its request was read
(grpc/grpc#43360, open in grpcio 1.85). After a few seconds of such an attack
the process kept 20 to 30 MiB it no longer used.

``malloc_trim(0)`` returns every free page of every heap. A thread reads the
process's resident size every CHECK_INTERVAL_SECONDS and trims once it has
grown TRIM_AFTER_GROWTH_BYTES above the lowest size seen since the last trim,
so a process whose memory is steady never trims. Memory freed when an attack
stops does not make the size grow, so after a trim the thread trims again at
each of its next FOLLOW_UPS looks, and for as long as a trim still gives back
PAYING_BYTES or more. ctypes releases the GIL for the call: the event loop
runs on, and waits only when it allocates from the heap being trimmed at that
moment (a trim took under 1 ms at rest and 2 to 45 ms during an attack, on
two busy cores).

What grpc.aio keeps is not free and cannot be returned: about 100 bytes per
reset stream (docs/reliability.md, section 9).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("sidecar")

CHECK_INTERVAL_SECONDS = 1.0
TRIM_AFTER_GROWTH_BYTES = 4 << 20
FOLLOW_UPS = 3
PAYING_BYTES = 1 << 20
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory, from /proc (cheaper than reading `status`)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


def malloc_trim() -> Callable[[], object] | None:
    """The C library's ``malloc_trim(0)``, or None where it has none (musl, other systems)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Trims from a thread of its own between `start()` and `stop()`."""

    def __init__(
        self,
        trim: Callable[[], object],
        resident: Callable[[], int] = resident_bytes,
        interval: float = CHECK_INTERVAL_SECONDS,
        growth: int = TRIM_AFTER_GROWTH_BYTES,
    ) -> None:
        self._trim, self._resident = trim, resident
        self._interval, self._growth = interval, growth
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)
        self._follow_ups = 0
        self.trims = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        low: int | None = None  # unknown until a look succeeds
        failing = False
        while True:
            try:
                low = self._resident() if low is None else self.look(low)
            except Exception as exc:  # a look that fails (no file descriptor left) is skipped
                if not failing:
                    log.warning("heap trim: a look failed (%s); trying again each second", type(exc).__name__)
                failing = True
            else:
                failing = False
            if self._stopping.wait(self._interval):
                return

    def look(self, low: int) -> int:
        """Trims if the resident size is `growth` above `low`, or a recent trim
        asks for a follow-up; returns the new low."""
        before = self._resident()
        grown = before >= low + self._growth
        if not grown and self._follow_ups == 0:
            return min(low, before)
        self._trim()
        self.trims += 1
        after = self._resident()
        if grown or before - after >= PAYING_BYTES:
            self._follow_ups = FOLLOW_UPS
        else:
            self._follow_ups -= 1
        log.debug("heap trimmed: resident %.1f -> %.1f MiB", before / (1 << 20), after / (1 << 20))
        return after


def start_heap_trimmer() -> HeapTrimmer | None:
    """A running trimmer, or None where the C library cannot trim."""
    trim = malloc_trim()
    if trim is None:
        return None
    trimmer = HeapTrimmer(trim)
    trimmer.start()
    return trimmer
