"""Hostile HTTP clients: one that sends the largest requests a listener takes,
as fast as it can, and one that holds many connections open by sending slowly."""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from dataclasses import dataclass

from tests.hostile.raw_http import connect, exchange


def worst_json(size: int) -> bytes:
    """A JSON object of about `size` bytes that costs the most to parse strictly
    (measured among the shapes in tests/hostile/test_http_attack.py): many empty
    objects with spaces, which forces the duplicate-key pass."""
    prefix, item, suffix = b'{"a": [', b"{}, ", b"{}]}"
    return prefix + item * ((size - len(prefix) - len(suffix)) // len(item)) + suffix


def padded_head(method: str, target: str, header_bytes: int, header_count: int, body_size: int) -> bytes:
    """A request head of about `header_bytes` in `header_count` lines."""
    fixed = [f"{method} {target} HTTP/1.1", "host: app", "content-type: application/json"]
    if body_size:
        fixed.append(f"content-length: {body_size}")
    room = header_bytes - sum(len(line) + 2 for line in fixed) - 2 - 64
    each = max(room // max(header_count, 1) - 12, 1)
    lines = [*fixed, *(f"x-pad-{i:03d}: {'p' * each}" for i in range(header_count))]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ordinary_scheduling() -> None:
    """The calling thread (or a child before it runs the attacker) back to the
    ordinary scheduler. A run under SCHED_RR (chaos --realtime) is passed down to
    every thread and child; an attacker that kept it would starve what it attacks,
    which no pod's CPU limits allow."""
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


@dataclass
class Target:
    name: str
    address: tuple[str, int] | str
    request: bytes


class LargestRequests:
    """`threads` clients, each sending `target.request` again and again."""

    def __init__(self, targets: list[Target], threads: int = 2) -> None:
        self._targets = targets
        self._threads = threads
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.statuses: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def start(self) -> None:
        for target in self._targets:
            for _ in range(self._threads):
                worker = threading.Thread(target=self._send, args=(target,), daemon=True)
                worker.start()
                self._workers.append(worker)

    def _send(self, target: Target) -> None:
        ordinary_scheduling()
        while not self._stop.is_set():
            try:
                status = exchange(target.address, target.request, timeout=10).status
            except OSError:
                status = 0
            with self._lock:
                self.statuses[target.name, status] += 1

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)


class SlowConnections:
    """`count` connections per address, every other one sending a request head
    one byte at a time, the rest a whole head and then its body one byte at a
    time; a connection the server closes is opened again."""

    def __init__(self, addresses: list[tuple[str, int] | str], count: int, byte_every_s: float = 0.2) -> None:
        self._addresses = addresses
        self._count = count
        self._interval = byte_every_s
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._hold, daemon=True)
        self.opened = 0

    def start(self) -> None:
        self._worker.start()

    def _hold(self) -> None:
        ordinary_scheduling()
        slow_head = b"POST /v1/check HTTP/1.1\r\nhost: a\r\nx-slow: " + b"s" * 10_000
        whole_head = b"POST /v1/check HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n"
        whole_head += b"content-length: 60000\r\n\r\n"
        slow_body = b'{"a": "' + b"b" * 10_000
        held: list[tuple[socket.socket, bytes, int]] = []
        try:
            while not self._stop.is_set():
                while len(held) < self._count * len(self._addresses):
                    rounds, at = divmod(len(held), len(self._addresses))
                    trickle_body = rounds % 2 == 1  # both kinds on every address
                    try:
                        sock = connect(self._addresses[at])
                        if trickle_body:
                            sock.sendall(whole_head)
                    except OSError:
                        break
                    sock.setblocking(False)
                    held.append((sock, slow_body if trickle_body else slow_head, 0))
                    self.opened += 1
                kept = []
                for sock, data, sent in held:
                    try:
                        sock.send(data[sent : sent + 1])
                        kept.append((sock, data, sent + 1))
                    except OSError:  # closed by the server: open another
                        sock.close()
                held = kept
                self._stop.wait(self._interval)
        finally:
            for sock, _, _ in held:
                sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._worker.join(10)
