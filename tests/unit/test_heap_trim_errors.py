"""The heap trimmer's thread outlives a failed look: reading the resident size
can fail for a moment (no file descriptor left during a connection flood), and
a thread that died then would never trim again, exactly after an attack."""

from __future__ import annotations

import threading

import pytest

from sidecar.heap_trim import TRIM_AFTER_GROWTH_BYTES, HeapTrimmer

MIB = 1 << 20
_NO_FD = OSError(24, "Too many open files")


@pytest.mark.parametrize(
    "sizes",
    [
        [70 * MIB, _NO_FD, ValueError("short read")],  # failures after the first look
        [_NO_FD, 70 * MIB],  # the first look fails
    ],
)
def test_a_failed_look_does_not_stop_the_trimming(sizes: list[int | Exception]) -> None:
    upcoming = iter(sizes)
    trimmed = threading.Event()

    def resident() -> int:
        size = next(upcoming, 70 * MIB + TRIM_AFTER_GROWTH_BYTES)  # then it has grown
        if isinstance(size, Exception):
            raise size
        return size

    trimmer = HeapTrimmer(trimmed.set, resident, interval=0.005)
    trimmer.start()
    try:
        assert trimmed.wait(5.0)
    finally:
        trimmer.stop()
    assert trimmer.trims >= 1
