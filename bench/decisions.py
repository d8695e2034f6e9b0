"""Counting the sidecar's decision log lines, to prove that each answer the
load generator counted was a real check and to see what was decided."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson


@dataclass(slots=True)
class Tally:
    lines: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def allows(self) -> int:
        return self.outcomes.get("allow", 0)

    def describe(self) -> str:
        denies = {k: v for k, v in self.outcomes.items() if k != "allow"}
        text = f"{self.lines} logged, {self.allows} allow"
        if denies:
            text += ", deny: " + ", ".join(f"{v} {k}" for k, v in sorted(denies.items()))
        return text


class DecisionLogReader:
    """Reads what a sidecar appended to its decision log since the last call."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0

    def _size(self) -> int:
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0

    def settle(self, quiet: float = 0.1, timeout: float = 5.0) -> None:
        """Wait until nothing has been appended for ``quiet`` seconds: checks
        still in flight when the load generator stopped get logged too."""
        deadline = time.monotonic() + timeout
        size = self._size()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self._size()
            if now == size:
                return
            size = now

    def read_new(self) -> Tally:
        self.settle()
        tally = Tally()
        with self._path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        end = data.rfind(b"\n") + 1  # a partly written last line waits for the next call
        self._offset += end
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            tally.lines += 1
            try:
                entry = orjson.loads(line)
                outcome = "allow" if entry.get("outcome") == "allow" else str(entry.get("reason", "deny"))
            except (orjson.JSONDecodeError, AttributeError):
                outcome = "unreadable line"
            tally.outcomes[outcome] += 1
        return tally
