"""Per-connection accounting on the gRPC port, so that one hostile client
cannot take memory or the event loop from Envoy's checks.

gRPC names a TCP connection by its peer address and port. Two behaviours mark
a client that is not an Envoy waiting for its answers:

- it does not read its answers: answered calls whose message cannot leave
  (a zero flow-control window) pile up on its connection, each held in memory;
- it cancels its calls: streams reset right after they were opened.

A connection that cancels many calls gets its further checks denied at once,
without parsing or asking OPA. A connection that has left answers unread for
longer than any Envoy would wait gets a bare status instead of an answer:
trailers need no flow-control window, so the call ends and frees its memory.
That status is an error, which a fail-open Envoy would let through; but an
Envoy whose answers stay unread that long has already given up on those
checks (its timeout is far shorter), so it changes nothing an Envoy sees.

Unix socket peers all look alike, so they are not told apart and never
refused here: on a unix socket, file permissions decide who may connect.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A connection is stalled once its oldest unread answer is this old and at
# least MIN_UNREAD_WHEN_STALLED answers wait; Envoy's check timeout is 0.25 s.
STALL_SECONDS = 1.0
MIN_UNREAD_WHEN_STALLED = 16
# Cancelled calls a connection may have within a window before it gets no work.
MAX_CANCELS_PER_WINDOW = 64
CANCEL_WINDOW_SECONDS = 1.0
# Connections remembered at once; beyond it, those holding nothing are forgotten.
MAX_PEERS = 4096


class Refusal(enum.Enum):
    CANCELLING = "the client cancels its checks"
    STALLED = "the client leaves its answers unread"


@dataclass(slots=True)
class _Peer:
    unread: dict[int, float] = field(default_factory=dict)  # answer -> when it was sent, oldest first
    cancels: int = 0
    window_start: float = 0.0


def _is_connection(peer: str) -> bool:
    return peer.startswith(("ipv4:", "ipv6:"))


class PeerGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._peers: dict[str, _Peer] = {}
        self._clock = clock
        self._ids = itertools.count()

    def refusal(self, peer: str) -> Refusal | None:
        """Whether checks from this connection are refused now, and why."""
        state = self._peers.get(peer)
        if state is None:
            return None
        now = self._clock()
        if len(state.unread) >= MIN_UNREAD_WHEN_STALLED:
            oldest = next(iter(state.unread.values()))
            if now - oldest >= STALL_SECONDS:
                return Refusal.STALLED
        if state.cancels >= MAX_CANCELS_PER_WINDOW and now - state.window_start < CANCEL_WINDOW_SECONDS:
            return Refusal.CANCELLING
        return None

    def sending(self, peer: str) -> Callable[[], None]:
        """An answer leaves for this connection; call the result once the call ended."""
        state = self._state(peer)
        if state is None:
            return _nothing
        answer = next(self._ids)
        state.unread[answer] = self._clock()

        def delivered() -> None:
            state.unread.pop(answer, None)

        return delivered

    def cancelled(self, peer: str) -> None:
        state = self._state(peer)
        if state is None:
            return
        now = self._clock()
        if now - state.window_start >= CANCEL_WINDOW_SECONDS:
            state.window_start, state.cancels = now, 0
        state.cancels += 1

    def _state(self, peer: str) -> _Peer | None:
        if not _is_connection(peer):
            return None
        state = self._peers.get(peer)
        if state is None:
            if len(self._peers) >= MAX_PEERS:
                self._forget_idle()
            state = self._peers[peer] = _Peer()
        return state

    def _forget_idle(self) -> None:
        now = self._clock()
        for peer, state in list(self._peers.items()):
            if not state.unread and now - state.window_start >= CANCEL_WINDOW_SECONDS:
                del self._peers[peer]
        if len(self._peers) >= MAX_PEERS:  # every one holds something: drop the oldest quarter
            for peer in list(self._peers)[: MAX_PEERS // 4]:
                del self._peers[peer]

    @property
    def peers(self) -> int:
        return len(self._peers)


def _nothing() -> None:
    pass
