"""The decision log's writer thread writes lines in batches: a burst of lines
costs a few writes (a thread woken per line cost the event loop a fifth of its
CPU per check), each line still reaches the destination within milliseconds,
and batches stay within PIPE_BUF so workers sharing stdout never interleave."""

from __future__ import annotations

import io
import select
import threading
import time

import pytest

from sidecar.log_writer import GATHER_SECONDS, LineWriter


class _CountingStream(io.RawIOBase):
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.written = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        self.written.set()
        return len(data)


def _line(n: int) -> bytes:
    return b'{"decision_id": "%06d", "outcome": "allow"}\n' % n


def test_a_burst_of_lines_goes_out_in_few_writes() -> None:
    stream = _CountingStream()
    writer = LineWriter(stream, 1 << 20)  # type: ignore[arg-type]
    lines = [_line(n) for n in range(500)]
    for line in lines:
        writer.write(line)
    assert writer.flush(5.0)
    writer.close(1.0)
    assert b"".join(stream.writes) == b"".join(lines)  # every line, in order, once
    # 500 lines of 43 bytes fit in a handful of PIPE_BUF batches, not 500 writes.
    assert len(stream.writes) <= 2 * (len(b"".join(lines)) // select.PIPE_BUF + 1)
    assert all(len(batch) <= select.PIPE_BUF for batch in stream.writes)
    assert all(batch.endswith(b"\n") for batch in stream.writes)


def test_a_lone_line_is_written_without_a_flush_within_milliseconds() -> None:
    stream = _CountingStream()
    writer = LineWriter(stream, 1 << 20)  # type: ignore[arg-type]
    started = time.monotonic()
    writer.write(_line(1))
    assert stream.written.wait(5.0)
    took = time.monotonic() - started
    writer.close(1.0)
    assert stream.writes == [_line(1)]
    assert took >= GATHER_SECONDS * 0.5  # it waited for company...
    assert took < 1.0  # ...briefly (generous: shared machines stall threads)


def test_lines_written_at_a_steady_pace_are_batched() -> None:
    stream = _CountingStream()
    writer = LineWriter(stream, 1 << 20)  # type: ignore[arg-type]
    count = 200
    for n in range(count):  # ~2,000 lines a second, like a busy sidecar
        writer.write(_line(n))
        time.sleep(0.0005)
    assert writer.flush(5.0)
    writer.close(1.0)
    assert b"".join(stream.writes) == b"".join(_line(n) for n in range(count))
    assert len(stream.writes) < count / 3


def test_flush_does_not_wait_for_the_gathering() -> None:
    stream = _CountingStream()
    writer = LineWriter(stream, 1 << 20)  # type: ignore[arg-type]
    writer.write(_line(1))
    assert writer.flush(5.0)
    assert stream.writes == [_line(1)]
    writer.close(1.0)


def test_line_times_follow_the_clock_across_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar import decision_log

    for now, text in [
        (1767225600.0, "2026-01-01T00:00:00.000Z"),
        (1767225600.9996, "2026-01-01T00:00:00.999Z"),
        (1767225601.0004, "2026-01-01T00:00:01.000Z"),
        (1767225600.5, "2026-01-01T00:00:00.500Z"),  # the clock stepped back
        (1767312000.25, "2026-01-02T00:00:00.250Z"),
    ]:
        monkeypatch.setattr(time, "time", lambda now=now: now)
        assert decision_log._timestamp() == text
