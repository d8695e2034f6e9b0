"""Per-connection accounting on the gRPC port (sidecar/envoy/peer_guard.py)."""

from __future__ import annotations

from sidecar.envoy.peer_guard import (
    CANCEL_WINDOW_SECONDS,
    MAX_CANCELS_PER_WINDOW,
    MAX_PEERS,
    MIN_UNREAD_WHEN_STALLED,
    STALL_SECONDS,
    PeerGuard,
    Refusal,
)

PEER = "ipv4:127.0.0.1:40000"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_answers_read_in_time_never_refuse() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    for _ in range(10 * MIN_UNREAD_WHEN_STALLED):
        delivered = guard.sending(PEER)
        clock.now += 0.01
        delivered()
    clock.now += 10 * STALL_SECONDS
    assert guard.refusal(PEER) is None


def test_a_burst_of_answers_not_yet_sent_is_not_a_stall() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    for _ in range(1000):
        guard.sending(PEER)
    assert guard.refusal(PEER) is None  # all of them young


def test_answers_left_unread_past_the_stall_time_refuse_that_connection_only() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    for _ in range(MIN_UNREAD_WHEN_STALLED):
        guard.sending(PEER)
    clock.now += STALL_SECONDS
    assert guard.refusal(PEER) is Refusal.STALLED
    assert guard.refusal("ipv4:127.0.0.1:40001") is None


def test_fewer_unread_answers_than_the_minimum_are_no_stall() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    for _ in range(MIN_UNREAD_WHEN_STALLED - 1):
        guard.sending(PEER)
    clock.now += 100 * STALL_SECONDS
    assert guard.refusal(PEER) is None


def test_a_stalled_connection_recovers_once_its_answers_leave() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    sent = [guard.sending(PEER) for _ in range(MIN_UNREAD_WHEN_STALLED)]
    clock.now += STALL_SECONDS
    for delivered in sent:
        delivered()
    assert guard.refusal(PEER) is None


def test_a_cancel_storm_refuses_until_the_window_passes() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    for _ in range(MAX_CANCELS_PER_WINDOW - 1):
        guard.cancelled(PEER)
    assert guard.refusal(PEER) is None
    guard.cancelled(PEER)
    assert guard.refusal(PEER) is Refusal.CANCELLING
    clock.now += CANCEL_WINDOW_SECONDS
    assert guard.refusal(PEER) is None


def test_unix_socket_peers_are_never_refused() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    for _ in range(10 * MAX_CANCELS_PER_WINDOW):
        guard.cancelled("unix:/run/authz.sock")
        guard.sending("unix:/run/authz.sock")
    clock.now += STALL_SECONDS
    assert guard.refusal("unix:/run/authz.sock") is None
    assert guard.peers == 0


def test_the_number_of_connections_remembered_is_bounded() -> None:
    clock = Clock()
    guard = PeerGuard(clock)
    for port in range(3 * MAX_PEERS):
        guard.sending(f"ipv4:10.0.0.1:{port}")()
        clock.now += 0.001
    assert guard.peers <= MAX_PEERS
