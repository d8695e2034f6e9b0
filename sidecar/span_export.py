"""Span export that can never hold a check: ended spans go into a bounded
queue that one background thread drains to the exporter.

A full queue drops the span at once; a batch the exporter refuses, fails or
raises on is dropped too. Every drop is counted (``dropped``), and nothing
here blocks or logs on the event loop.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("sidecar.tracing")


class BoundedSpanExport(SpanProcessor):
    def __init__(
        self,
        exporter: SpanExporter,
        dropped: Callable[[int], None],
        *,
        max_queue: int,
        max_batch: int,
        delay_seconds: float,
    ) -> None:
        self._exporter = exporter
        self._dropped = dropped
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._delay = delay_seconds
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="span-export", daemon=True)
        self._thread.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopping or len(self._queue) >= self._max_queue:
            self._dropped(1)
            return
        self._queue.append(span)
        if len(self._queue) >= self._max_batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        self._idle.clear()
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
            try:
                result = self._exporter.export(batch)
            except Exception as exc:  # an exporter bug must not stop the thread
                log.debug("span export raised %s", type(exc).__name__)
                result = SpanExportResult.FAILURE
            if result is not SpanExportResult.SUCCESS:
                self._dropped(len(batch))
        self._idle.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued now (tests, shutdown); True if done in time."""
        self._idle.clear()
        self._wake.set()
        return self._idle.wait(timeout_millis / 1000) and not self._queue

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(5.0)
        self._exporter.shutdown()
