"""The in-process deny memory: a bounded table of recent denies.

Two kinds of entry, both keyed by keyed hashes (never a caller's or a
credential's value): per caller, the latest remembered deny and the credential
it presented; per caller and action, the latest deny of that action. An entry
lives until its window ends. At capacity the entry written longest ago goes
first: a forgotten caller is simply asked about again, so being full can only
cost a deny that memory would have added, never add an allow.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DIGEST_BYTES = 16


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asks, for what, with which credential: each a keyed hash."""

    caller: bytes
    action: bytes
    credential: bytes

    @property
    def action_key(self) -> bytes:
        return self.caller + self.action


@dataclass(frozen=True, slots=True)
class EarlierDeny:
    """A remembered deny: its decision id, when it was made (epoch seconds),
    and the credential it presented (for a caller's entry)."""

    decision_id: str
    denied_at: float
    credential: bytes = b""


@dataclass(frozen=True, slots=True)
class Recollection:
    """What the memory holds about one check's caller and action."""

    caller: EarlierDeny | None = None
    action: EarlierDeny | None = None


@dataclass(slots=True)
class _Entry:
    deny: EarlierDeny
    expires: float


class LocalDenyTable:
    def __init__(self, capacity: int, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.clock = clock
        self.evicted = 0  # live entries dropped for room
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def recall(self, subject: Subject) -> Recollection:
        now = self.clock()
        return Recollection(self._live(subject.caller, now), self._live(subject.action_key, now))

    def remember(self, subject: Subject, decision_id: str, window: float) -> None:
        now = self.clock()
        expires = now + window
        self._put(subject.caller, _Entry(EarlierDeny(decision_id, now, subject.credential), expires), now)
        self._put(subject.action_key, _Entry(EarlierDeny(decision_id, now), expires), now)

    def _live(self, key: bytes, now: float) -> EarlierDeny | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        return entry.deny

    def _put(self, key: bytes, entry: _Entry, now: float) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            _, oldest = self._entries.popitem(last=False)
            if oldest.expires > now:
                self.evicted += 1
