"""Decision log lines written by a thread of their own, from a bounded backlog.

A write to a pipe or disk that drains slowly (a busy container log driver, a
full disk) would block whoever makes it; on the event loop that would hold
every check. So the loop only queues the line and a thread writes it.

A check's decision counts as recorded once its line is in the backlog of a
writer that has not failed. It is not recorded, and the check is denied, when
the backlog is full (the destination does not keep up) or the last write
failed; in both cases the line is not kept. The writer retries a failed write
every second, so checks are allowed again once the destination recovers.

Lines gather for a few milliseconds before the thread writes them: waking a
thread for every line cost the event loop about a fifth of its CPU per check
(bench/REPORT.md); once per batch it costs nothing measurable.
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
# How long lines wait to be written together (flush and close do not wait).
GATHER_SECONDS = 0.005


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
        self._backlog = 0  # bytes queued, being written, or left unwritten at close
        self._failure: str | None = None  # exception type of the last failed write
        self._closing = False
        self._flushing = 0  # callers of flush() waiting: no gathering meanwhile
        self._idle = False  # the thread waits for a first line: write() must wake it
        self._changed = threading.Condition(threading.Lock())
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
            if self._idle:
                self._changed.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is written; False if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._flushing += 1
            self._changed.notify_all()
            try:
                while self._backlog:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._changed.wait(left)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float) -> None:
        """Write what is queued (up to `timeout`), then stop. A destination that
        does not drain in time keeps what is left; the process log says how much."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive() or self._backlog:
            log.error("decision log closed with %d bytes not written", self._backlog)

    def _next_batches(self) -> list[bytes] | None:
        """Every line queued, as batches of whole lines of at most PIPE_BUF bytes
        unless one line is longer: a write that size to a pipe is atomic, so
        processes sharing stdout (--workers) never interleave within a line.
        None once closed and empty."""
        with self._changed:
            self._idle = True
            while not self._lines and not self._closing:
                self._changed.wait()
            self._idle = False
            if not self._closing and not self._flushing:
                # Let the lines of other checks join: woken early only by flush() or close().
                self._changed.wait(GATHER_SECONDS)
            if not self._lines:
                return None
            batches: list[bytes] = []
            lines = self._lines
            while lines:
                batch = [lines.popleft()]
                size = len(batch[0])
                while lines and size + len(lines[0]) <= select.PIPE_BUF:
                    size += len(lines[0])
                    batch.append(lines.popleft())
                batches.append(b"".join(batch))
            return batches

    def _run(self) -> None:
        while (batches := self._next_batches()) is not None:
            for batch in batches:
                if not self._write(batch):
                    continue  # closed while failing: it stays counted, close() reports it
                with self._changed:
                    self._backlog -= len(batch)
                    self._changed.notify_all()

    def _write(self, batch: bytes) -> bool:
        """Write the batch, retrying until it is written (True) or the writer
        closes (False: the batch is not written)."""
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
                        return False
                continue
            with self._changed:
                if self._failure is not None:
                    log.warning("decision log writes again after a failure (%s)", self._failure)
                    self._failure = None
            return True
