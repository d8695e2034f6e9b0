"""When the sidecar trims its C heap (sidecar/heap_trim.py)."""

from __future__ import annotations

from sidecar.heap_trim import FOLLOW_UPS, PAYING_BYTES, TRIM_AFTER_GROWTH_BYTES, HeapTrimmer, malloc_trim

MIB = 1 << 20


class _Process:
    """A resident size the test sets; a trim gives back what the test says it frees."""

    def __init__(self, resident: int) -> None:
        self.resident = resident
        self.freed_by_next_trim = 0
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1
        self.resident -= self.freed_by_next_trim
        self.freed_by_next_trim = 0


def _trimmer(process: _Process) -> HeapTrimmer:
    return HeapTrimmer(process.trim, lambda: process.resident)


def test_steady_or_shrinking_memory_is_never_trimmed() -> None:
    process = _Process(70 * MIB)
    trimmer, low = _trimmer(process), process.resident
    for change in (MIB, -2 * MIB, TRIM_AFTER_GROWTH_BYTES - MIB, 0):
        process.resident += change
        low = trimmer.look(low)
    assert process.trims == 0
    assert low == 69 * MIB  # the lowest size seen


def test_growth_is_trimmed_and_followed_up_while_memory_comes_back() -> None:
    process = _Process(70 * MIB)
    trimmer, low = _trimmer(process), process.resident
    process.resident += TRIM_AFTER_GROWTH_BYTES  # an attack
    process.freed_by_next_trim = MIB
    low = trimmer.look(low)
    assert process.trims == 1
    assert low == process.resident  # the size after the trim

    # The attack ends: what it used is freed inside the heap, the size does not move.
    process.freed_by_next_trim = 10 * MIB
    low = trimmer.look(low)
    assert process.trims == 2
    assert low == 63 * MIB

    # A trim that gave back PAYING_BYTES or more is followed up FOLLOW_UPS times, then no more.
    for _ in range(FOLLOW_UPS + 2):
        low = trimmer.look(low)
    assert process.trims == 2 + FOLLOW_UPS


def test_a_paying_follow_up_keeps_the_trimmer_looking() -> None:
    process = _Process(70 * MIB)
    trimmer, low = _trimmer(process), process.resident
    process.resident += TRIM_AFTER_GROWTH_BYTES
    low = trimmer.look(low)
    for _ in range(FOLLOW_UPS - 1):
        low = trimmer.look(low)
    process.freed_by_next_trim = PAYING_BYTES
    low = trimmer.look(low)
    for _ in range(FOLLOW_UPS + 2):
        low = trimmer.look(low)
    assert process.trims == 1 + FOLLOW_UPS + FOLLOW_UPS


def test_this_c_library_can_trim() -> None:
    # The image is Debian's python:3.11-slim (glibc); musl would have no malloc_trim.
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)
