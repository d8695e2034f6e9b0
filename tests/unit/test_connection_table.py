"""Which connection the HTTP listener's cap evicts for a newcomer.

What must hold whatever the mix: a connection answering a whole request, or
with a body in its grace, is never evicted; one still sending its body goes
only when no connection is still sending its head; an idle one (a proxy's
pooled connection, which the proxy may be reusing as it closes: an error to
the proxy) goes last."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from sidecar.http_guard import BODY_GRACE_S, ConnectionTable, GuardedRequestHandler, Phase


@dataclass(eq=False)
class FakeConnection:
    phase: Phase
    served: int
    phase_since: float
    evicted: bool = False

    def evict(self) -> None:
        self.evicted = True


RANK = {Phase.NEW: 0, Phase.HEAD: 0, Phase.BODY: 1, Phase.IDLE: 2}
NOW = 200.0  # after every connection's phase began

connections = st.lists(
    st.builds(
        FakeConnection,
        phase=st.sampled_from(list(Phase)),
        served=st.integers(0, 5),
        # Long settled in the phase, or within a body's grace.
        phase_since=st.one_of(st.floats(0, 100), st.floats(NOW - BODY_GRACE_S / 2, NOW)),
    ),
    min_size=1,
    max_size=12,
)


def _full_table(conns: list[FakeConnection]) -> ConnectionTable:
    table = ConnectionTable(cap=len(conns))
    for conn in conns:
        assert table.admit(cast(GuardedRequestHandler, conn), NOW)
    return table


@given(connections)
def test_the_cap_evicts_the_least_engaged_never_a_busy_one(conns: list[FakeConnection]) -> None:
    table = _full_table(conns)
    newcomer = FakeConnection(Phase.NEW, 0, NOW)

    admitted = table.admit(cast(GuardedRequestHandler, newcomer), NOW)

    victims = [c for c in conns if c.evicted]
    evictable = [
        c
        for c in conns
        if c.phase is not Phase.BUSY and (c.phase is not Phase.BODY or c.phase_since <= NOW - BODY_GRACE_S)
    ]
    assert admitted == bool(evictable)
    assert len(victims) == (1 if evictable else 0)
    assert len(table) == len(conns)
    if victims:
        victim = victims[0]
        assert victim in evictable
        # Nothing of a lower rank was left while this one went; within its rank,
        # nothing that has served fewer requests.
        assert all(RANK[c.phase] >= RANK[victim.phase] for c in evictable)
        peers = [c for c in evictable if RANK[c.phase] == RANK[victim.phase]]
        assert all(c.served >= victim.served for c in peers)


def test_a_table_of_busy_connections_turns_the_newcomer_away() -> None:
    table = _full_table([FakeConnection(Phase.BUSY, 1, 0.0) for _ in range(3)])
    assert not table.admit(cast(GuardedRequestHandler, FakeConnection(Phase.NEW, 0, 1.0)), NOW)
    assert table.turned_away == 1


def test_a_body_still_arriving_goes_before_a_pooled_idle_connection() -> None:
    pooled = FakeConnection(Phase.IDLE, 0, 0.0)  # even one that served no more
    trickling = FakeConnection(Phase.BODY, 3, 50.0)
    table = _full_table([pooled, trickling])
    assert table.admit(cast(GuardedRequestHandler, FakeConnection(Phase.NEW, 0, 99.0)), NOW)
    assert (trickling.evicted, pooled.evicted) == (True, False)


def test_a_body_that_just_began_is_not_taken() -> None:
    """A proxy's body arrives with its headers; only one still arriving after
    the grace is a slow client's."""
    arriving = FakeConnection(Phase.BODY, 0, NOW - BODY_GRACE_S / 2)
    table = _full_table([arriving])
    assert not table.admit(cast(GuardedRequestHandler, FakeConnection(Phase.NEW, 0, NOW)), NOW)
    assert not arriving.evicted
    assert table.admit(cast(GuardedRequestHandler, FakeConnection(Phase.NEW, 0, NOW)), NOW + BODY_GRACE_S)
    assert arriving.evicted


class FailingEviction(FakeConnection):
    closed = False

    def evict(self) -> None:
        raise RuntimeError("eviction failed")

    def force_close(self) -> None:
        self.closed = True


def test_a_failed_eviction_closes_the_victim_and_keeps_the_newcomer() -> None:
    victim = FailingEviction(Phase.HEAD, 0, 0.0)
    table = _full_table([victim])
    newcomer = FakeConnection(Phase.NEW, 0, NOW)
    assert table.admit(cast(GuardedRequestHandler, newcomer), NOW)
    assert victim.closed
    assert len(table) == 1
    table.leave(cast(GuardedRequestHandler, newcomer))
    assert len(table) == 0
