"""A paced HTTP/1.1 load generator that records every response itself.

A fixed rate, spread over keep-alive connections, each of which waits for its answer
before sending again: the chaos runs test faults, not overload, so the machine keeps CPU
to spare for the sidecar to meet its deadlines (overload has its own test). Each
connection sends `GET /allow/<n>` or `GET /deny/<n>`, n unique across the run, waits
for the answer, and records it: status, times, and for an echo from the upstream, the
`x-chaos-check` header the upstream received (the marker a policy's yes carries). Nothing
is sampled: every request sent is one record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson

MARKER_HEADER: Final = "x-chaos-check"
READ_TIMEOUT: Final = 5.0  # far beyond Envoy's own timeouts: a request this late is a failure
NO_RESPONSE: Final = 0  # status recorded when the connection failed before an answer
TIMED_OUT: Final = -1


@dataclass(slots=True)
class Result:
    seq: int
    target: int  # index into the targets
    allow_path: bool  # /allow/<seq> (the policy says yes) rather than /deny/<seq>
    sent: float  # time.monotonic()
    done: float
    status: int  # HTTP status, or NO_RESPONSE / TIMED_OUT
    echoed: str | None = None  # the marker header the upstream saw; None when not an echo
    echoed_path: str | None = None


@dataclass
class LoadGenerator:
    targets: Sequence[tuple[str, int]]
    connections_per_target: int
    rate: float  # checks per second, over all connections
    allow_every: int = 10  # of each 10 consecutive checks...
    allow_count: int = 7  # ...this many go to /allow
    results: list[Result] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def run(self, stop: asyncio.Event, max_checks: int | None = None) -> None:
        """Until `stop` is set (or `max_checks` requests were sent)."""
        workers = [
            asyncio.create_task(self._worker(index, stop, max_checks))
            for index in range(len(self.targets))
            for _ in range(self.connections_per_target)
        ]
        await asyncio.gather(*workers)

    async def _worker(self, target: int, stop: asyncio.Event, max_checks: int | None) -> None:
        host, port = self.targets[target]
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        interval = len(self.targets) * self.connections_per_target / self.rate
        next_at = time.monotonic() + random.uniform(0, interval)  # spread the connections out
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic())
            seq = next(self._seq)
            if max_checks is not None and seq > max_checks:
                break
            allow = seq % self.allow_every < self.allow_count
            path = f"/{'allow' if allow else 'deny'}/{seq}"
            result = Result(seq, target, allow, time.monotonic(), 0.0, NO_RESPONSE)
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: chaos.test\r\n\r\n".encode())
                keep = await asyncio.wait_for(_read_response(reader, result), READ_TIMEOUT)
            except TimeoutError:
                result.status, keep = TIMED_OUT, False
            except (OSError, asyncio.IncompleteReadError, ValueError):
                keep = False
            result.done = time.monotonic()
            self.results.append(result)
            if not keep and writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                reader = writer = None
                if result.status in (NO_RESPONSE, TIMED_OUT):
                    await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()


async def _read_response(reader: asyncio.StreamReader, result: Result) -> bool:
    """Fill in `result` from one response; True if the connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    result.status = status
    if status == 200:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError, IndexError):
            echo = orjson.loads(body)
            result.echoed_path = echo.get("path")
            seen = echo.get("headers", {}).get(MARKER_HEADER)
            result.echoed = ",".join(seen) if seen else None
    return headers.get("connection", "").lower() != "close"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass
    return b"".join(parts)


class LoadThread:
    """The load generator on its own event loop thread."""

    def __init__(self, generator: LoadGenerator) -> None:
        self.generator = generator
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self.generator.run(self._stop))
        self._loop.close()

    @property
    def count(self) -> int:
        return len(self.generator.results)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
