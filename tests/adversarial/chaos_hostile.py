"""Hostile clients as windows of a chaos or overload run (tests/hostile/): while the
load generator keeps counting every answer, one window floods the sidecar's HTTP
listeners with the largest requests they take and holds slow connections on them,
and others attack its gRPC port with HTTP/2 rapid resets or with streams whose
answers are never read.

The gRPC attacks need the port on TCP: a sidecar serving gRPC on a unix socket that
only Envoy mounts (the shipped pod) cannot be reached by them, and their windows are
left out. The HTTP window needs an HTTP listener.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import fields
from typing import Final

from sidecar.config import Settings
from tests.adversarial.chaos_faults import Window
from tests.adversarial.chaos_report import HOSTILE, HTTP_FLOOD
from tests.adversarial.process_monitor import established_to
from tests.hostile.http_attackers import LargestRequests, SlowConnections, Target, padded_head, worst_json
from tests.hostile.under_attack import AttackProcess

RAPID_RESET: Final = HOSTILE + "rapid-reset"
UNREAD_ANSWERS: Final = HOSTILE + "unread-answers"
_GRPC_ATTACKS: Final = {RAPID_RESET: "rapid-reset", UNREAD_ANSWERS: "unread-answers"}
SLOW_CONNECTIONS: Final = 300  # per listener, as in tests/hostile/http_attack.py
FLOOD_THREADS: Final = 2  # per kind of request
GRPC_THREADS: Final = 2
ATTACKER_START_S: Final = 15.0  # a new Python process at the lowest priority on a busy machine


def _address(listener: str) -> tuple[str, int] | str:
    """A listener flag's value (HOST:PORT or unix:///path) as raw_http takes it."""
    if listener.startswith("unix://"):
        return listener.removeprefix("unix://")
    host, _, port = listener.rpartition(":")
    return host, int(port)


def _default(name: str) -> int:
    (value,) = [f.default for f in fields(Settings) if f.name == name]
    assert isinstance(value, int)
    return value


def largest_requests(authz: tuple[str, int] | str, probes: tuple[str, int] | str) -> list[Target]:
    """The largest request each HTTP listener of a sidecar with default limits takes."""
    body = worst_json(_default("http_max_body_bytes"))
    header_bytes = _default("http_max_header_bytes")
    heads = header_bytes - 1024, _default("http_max_headers") - 8
    return [
        Target("/v1/check", authz, padded_head("POST", "/v1/check", *heads, len(body)) + body),
        Target("/ext_authz", authz, padded_head("POST", "/ext_authz/orders", *heads, len(body)) + body),
        Target("/metrics", probes, padded_head("GET", "/metrics", min(header_bytes, 16 << 10) - 1024, 32, 0)),
    ]


class HostileClients:
    """The attack windows against one sidecar; `inject` fits chaos_faults.run_schedule.
    What the attackers did is summed per window kind in `activity`."""

    def __init__(self, side: str, grpc_addr: str, http_addr: str, probe_addr: str) -> None:
        self.side = side
        self._grpc: tuple[str, int] | None = None
        if not grpc_addr.startswith("unix://"):
            host, _, port = grpc_addr.rpartition(":")
            self._grpc = host, int(port)
        self._http = [_address(a) for a in (http_addr, probe_addr) if a]
        self._lock = threading.Lock()
        self.activity: dict[str, Counter[str]] = {}

    def kinds(self) -> list[str]:
        """The attacks this sidecar's listeners can take."""
        found = [HTTP_FLOOD] if len(self._http) == 2 else []
        return found + (list(_GRPC_ATTACKS) if self._grpc is not None else [])

    def inject(self, kind: str, seconds: float) -> Window:
        start = time.monotonic()
        done: Counter[str] = Counter()
        if kind == HTTP_FLOOD:
            flood = LargestRequests(largest_requests(*self._http), threads=FLOOD_THREADS)
            authz = self._http[0]
            slow = SlowConnections(
                list(self._http),
                count=SLOW_CONNECTIONS,
                bodies_at=(authz,),
                body_bytes=_default("http_max_body_bytes"),
            )
            flood.start()
            slow.start()
            time.sleep(seconds)
            slow.stop()
            flood.stop()
            done.update({f"{name} {status}": n for (name, status), n in flood.statuses.items()})
            done["slow connections opened"] += slow.opened
        elif kind in _GRPC_ATTACKS and self._grpc is not None:
            host, port = self._grpc
            attack = AttackProcess(_GRPC_ATTACKS[kind], host, port)
            connected = established_to(port)
            attack.start(GRPC_THREADS)
            # The window opens when the attacker has connected, not when its process starts.
            waited = time.monotonic() + ATTACKER_START_S
            while established_to(port) <= connected and time.monotonic() < waited:
                time.sleep(0.02)
            start = time.monotonic()
            time.sleep(seconds)
            attack.stop()
            done.update(attack.counts)
        else:
            raise ValueError(kind)
        with self._lock:
            self.activity.setdefault(kind, Counter()).update(done)
        return Window(self.side, kind, start, time.monotonic())
