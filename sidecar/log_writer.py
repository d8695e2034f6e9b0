"""Decision log lines written by a thread of their own, from a bounded backlog.

A write to a pipe or disk that drains slowly (a busy container log driver, a
full disk) would block whoever makes it; on the event loop that would hold
every check. So the loop only queues the line and a thread writes it.

A check's decision counts as recorded once its line is in the backlog of a
writer that has not failed. It is not recorded, and the check is denied, when
the backlog is full (the destination does not keep up) or the last write
failed; in both cases the line is not kept. The writer retries a failed write
every second, so checks are allowed again once the destination recovers.
"""

from __future__ import annotations

import collections
import logging
import select
import threading
import time
from typing import IO

log = logging.getLogger("sidecar.decision_log")

_RETRY_SECONDS = 1.0


class LineNotRecorded(Exception):
    """The line was not taken: the decision cannot be recorded."""


class BacklogFull(LineNotRecorded):
    pass


class WriterFailed(LineNotRecorded):
    pass


class LineWriter:
    def __init__(self, stream: IO[bytes], max_backlog_bytes: int) -> None:
        self._stream = stream
        self._max_backlog = max_backlog_bytes
        self._lines: collections.deque[bytes] = collections.deque()
        self._backlog = 0  # bytes queued or being written
        self._failure: str | None = None  # exception type of the last failed write
        self._closing = False
        self._changed = threading.Condition()
        self.refused = 0  # lines not taken
        self._thread = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
        self._thread.start()

    @property
    def backlog_bytes(self) -> int:
        return self._backlog

    def write(self, line: bytes) -> None:
        """Queue one line, or raise LineNotRecorded. Never blocks on the destination."""
        with self._changed:
            if self._failure is not None:
                self.refused += 1
                raise WriterFailed(f"the decision log's last write failed ({self._failure})")
            if self._closing:
                self.refused += 1
                raise WriterFailed("the decision log is closed")
            if self._backlog + len(line) > self._max_backlog:
                self.refused += 1
                raise BacklogFull(f"{self._backlog} bytes of decision log wait to be written")
            self._lines.append(line)
            self._backlog += len(line)
            self._changed.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is written; False if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._backlog:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return self._backlog == 0

    def close(self, timeout: float) -> None:
        """Write what is queued (up to `timeout`), then stop. A destination that
        does not drain in time keeps what is left; the process log says how much."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive() or self._backlog:
            log.error("decision log closed with %d bytes not written", self._backlog)

    def _next_batch(self) -> bytes | None:
        """Whole lines, at most PIPE_BUF bytes unless one line is longer: a write
        that size to a pipe is atomic, so processes sharing stdout (--workers)
        never interleave within a line."""
        with self._changed:
            while not self._lines and not self._closing:
                self._changed.wait()
            if not self._lines:
                return None
            batch = [self._lines.popleft()]
            size = len(batch[0])
            while self._lines and size + len(self._lines[0]) <= select.PIPE_BUF:
                size += len(self._lines[0])
                batch.append(self._lines.popleft())
            return b"".join(batch)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._write(batch)
            with self._changed:
                self._backlog -= len(batch)
                self._changed.notify_all()

    def _write(self, batch: bytes) -> None:
        """Write the batch, retrying until it is written or the writer closes."""
        while True:
            try:
                self._stream.write(batch)
                self._stream.flush()
            except Exception as exc:  # any failure means: not recorded
                with self._changed:
                    if self._failure is None:
                        log.error(
                            "decision log write failed (%s); checks are denied until it recovers",
                            type(exc).__name__,
                        )
                    self._failure = type(exc).__name__
                    if self._closing or self._changed.wait_for(lambda: self._closing, _RETRY_SECONDS):
                        return
                continue
            with self._changed:
                if self._failure is not None:
                    log.warning("decision log writes again after a failure (%s)", self._failure)
                    self._failure = None
            return
