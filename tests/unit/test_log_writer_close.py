"""Closing the decision log while its destination fails: the lines the writer
could not write stay counted as not written, so closing reports them and a
flush never claims they were written."""

from __future__ import annotations

import errno
import io
import logging
import time

import pytest

from sidecar.log_writer import LineWriter, WriterFailed

LINE = b'{"decision_id": "1", "outcome": "allow"}\n'


class _FailingStream(io.RawIOBase):
    """A destination whose every write fails (a full disk)."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "no space left on device")


def _until_the_failure_is_seen(writer: LineWriter) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            writer.write(LINE)
        except WriterFailed:
            return
        assert time.monotonic() < deadline
        time.sleep(0.002)


def test_lines_a_failing_destination_never_took_are_reported_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = _FailingStream()
    writer = LineWriter(stream, 1 << 20)  # type: ignore[arg-type]
    writer.write(LINE)
    _until_the_failure_is_seen(writer)
    taken = writer.backlog_bytes
    assert taken >= len(LINE)
    with caplog.at_level(logging.ERROR, logger="sidecar.decision_log"):
        writer.close(2.0)
    assert writer.backlog_bytes == taken  # still not written
    assert not writer.flush(0.05)
    assert f"decision log closed with {taken} bytes not written" in caplog.text
