"""Decision ids are version 4 UUIDs from the kernel's CSPRNG, unique across
checks and across forked workers."""

from __future__ import annotations

import os
import uuid

from sidecar.decision_id import new_decision_id


def test_ids_are_version_4_uuids_in_canonical_form() -> None:
    for _ in range(1000):  # crosses several 256-id blocks
        text = new_decision_id()
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_ids_do_not_repeat() -> None:
    ids = [new_decision_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)


def test_random_bits_are_not_stuck() -> None:
    # Every one of the 122 random bits takes both values over a few hundred ids.
    ors, ands = 0, (1 << 128) - 1
    for _ in range(600):
        value = uuid.UUID(new_decision_id()).int
        ors |= value
        ands &= value
    fixed = (0xF000 << 64) | (0xC000 << 48)  # version and variant bits
    assert (ors ^ ands) | fixed == (1 << 128) - 1


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_decision_id()  # the parent holds a block of random bytes
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write_end, ",".join(new_decision_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode().split(",")
    os.waitpid(pid, 0)
    parent = [new_decision_id() for _ in range(10)]
    assert len(child) == 10
    assert not set(child) & set(parent)
