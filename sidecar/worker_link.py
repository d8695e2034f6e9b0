"""What a --workers parent hands each worker: the listening sockets it bound, and
the write end of a pipe for heartbeats.

The worker's event loop writes a byte every HEARTBEAT_INTERVAL_SECONDS. A loop
that is stuck or a process that is stopped writes nothing, which is how the
parent tells a worker that no longer answers from a busy one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

WORKER_ENV = "OPA_SIDECAR_WORKER_INDEX"
FDS_ENV = "OPA_SIDECAR_WORKER_FDS"
HEARTBEAT_INTERVAL_SECONDS = 0.25
LISTENERS = ("grpc", "http", "probe")


def is_worker() -> bool:
    return WORKER_ENV in os.environ


def encode_fds(listeners: dict[str, int], heartbeat: int) -> str:
    return ",".join(f"{name}={fd}" for name, fd in {**listeners, "heartbeat": heartbeat}.items())


def _decoded_fds() -> dict[str, int]:
    text = os.environ.get(FDS_ENV, "")
    return {name: int(fd) for name, _, fd in (item.partition("=") for item in text.split(",") if item)}


def inherited_listeners() -> dict[str, socket.socket]:
    """The parent's listening sockets, by listener name (empty outside a worker)."""
    fds = _decoded_fds()
    return {name: socket.socket(fileno=fds[name]) for name in LISTENERS if name in fds}


def heartbeat_fd() -> int | None:
    """The write end of the heartbeat pipe, non-blocking (None outside a worker)."""
    fd = _decoded_fds().get("heartbeat")
    if fd is not None:
        os.set_blocking(fd, False)
    return fd


def beat(fd: int) -> None:
    """One heartbeat."""
    # A full pipe means the parent is not reading: nothing to do about it here.
    with contextlib.suppress(BlockingIOError, BrokenPipeError):
        os.write(fd, b".")


async def send_heartbeats(fd: int) -> None:
    """Runs on the serving loop until cancelled."""
    while True:
        beat(fd)
        await asyncio.sleep(HEARTBEAT_INTERVAL_SECONDS)
