"""``python -m tests.hostile.lag_probe LAG_FILE serve FLAGS...``: the sidecar as
``opa-sidecar serve`` runs it, plus a task that measures how late its event
loop runs a short timer. Every stall over 2 ms is written to LAG_FILE ten
times a second, so a test can read the longest stall within any window of its
own: JSON ``{"stalls": [[wall time, seconds late, CPU seconds the loop's
thread used meanwhile], ...], "gc": [[wall time, generation, seconds], ...]}``.
A stall with little CPU is the machine's (the process was not scheduled); one
with as much CPU as lateness is the sidecar's own work.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time

import uvloop

from sidecar.cli import build_parser
from sidecar.config import settings_from
from sidecar.server import serve

TICK_S = 0.002
WORTH_KEEPING_S = 0.002
MAX_KEPT = 20_000


def watch_collections(collections: list[tuple[float, int, float]]) -> None:
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started and len(collections) < MAX_KEPT:
            took = time.perf_counter() - started[0]
            if took > WORTH_KEEPING_S:
                collections.append((time.time(), info["generation"], took))

    gc.callbacks.append(on_gc)


async def watch(path: str) -> None:
    loop = asyncio.get_running_loop()
    stalls: list[tuple[float, float, float]] = []
    collections: list[tuple[float, int, float]] = []
    watch_collections(collections)
    last_write = 0.0
    while True:
        before, cpu_before = loop.time(), time.thread_time()
        await asyncio.sleep(TICK_S)
        late = loop.time() - before - TICK_S
        if late > WORTH_KEEPING_S and len(stalls) < MAX_KEPT:
            stalls.append((time.time(), late, time.thread_time() - cpu_before))
        if before - last_write > 0.1:
            last_write = before
            with open(path + ".tmp", "w") as out:
                json.dump({"stalls": stalls, "gc": collections}, out)
            os.replace(path + ".tmp", path)


async def serve_watched(path: str, argv: list[str]) -> None:
    settings = settings_from(build_parser().parse_args(argv))
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr)
    watcher = asyncio.create_task(watch(path))
    try:
        await serve(settings)
    finally:
        watcher.cancel()


if __name__ == "__main__":
    uvloop.run(serve_watched(sys.argv[1], sys.argv[2:]))
