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


Address = tuple[str, int] | str


class SlowConnections:
    """`count` connections per address, each sending a request head one byte at
    a time; at the addresses in `bodies_at` every other one sends a whole head
    and then a body of `body_bytes` one byte at a time. A connection the server
    closes is opened again, of the same kind at the same address."""

    def __init__(
        self,
        addresses: list[Address],
        count: int,
        byte_every_s: float = 0.2,
        bodies_at: tuple[Address, ...] = (),
        body_bytes: int = 60_000,
    ) -> None:
        self._wanted = [
            (address, address in bodies_at and i % 2 == 1) for i in range(count) for address in addresses
        ]
        self._interval = byte_every_s
        self._body_bytes = body_bytes
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._hold, daemon=True)
        self.opened = 0

    def start(self) -> None:
        self._worker.start()

    def _hold(self) -> None:
        ordinary_scheduling()
        slow_head = b"POST /v1/check HTTP/1.1\r\nhost: a\r\nx-slow: " + b"s" * 10_000
        whole_head = b"POST /v1/check HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n"
        whole_head += b"content-length: %d\r\n\r\n" % self._body_bytes
        slow_body = (b'{"a": "' + b"b" * self._body_bytes)[: self._body_bytes - 1]
        to_open = list(self._wanted)
        held: list[tuple[socket.socket, int, Address, bool]] = []
        try:
            while not self._stop.is_set():
                while to_open:
                    address, body = to_open[-1]
                    try:
                        sock = connect(address)
                        if body:
                            sock.sendall(whole_head)
                    except OSError:
                        break
                    to_open.pop()
                    sock.setblocking(False)
                    held.append((sock, 0, address, body))
                    self.opened += 1
                kept = []
                for sock, sent, address, body in held:
                    try:
                        data = slow_body if body else slow_head
                        sock.send(data[sent : sent + 1])
                        kept.append((sock, sent + 1, address, body))
                    except OSError:  # closed by the server: open another
                        sock.close()
                        to_open.append((address, body))
                held = kept
                self._stop.wait(self._interval)
        finally:
            for sock, _, _, _ in held:
                sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._worker.join(10)
