"""The faults a chaos run injects, in known windows.

Process faults act on the OPA process: SIGKILL then restart, SIGSTOP/SIGCONT
(paused), and a SIGSTOP/SIGCONT duty cycle that slows it the way a CPU quota does.
Answer faults make the fault OPA answer badly: each fault keeps the yes-shaped payload
where it can, so a sidecar that ignored the fault would allow. Outside its windows the
fault OPA answers as the chaos policy does, and records every yes it gives.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from tests.adversarial.chaos_stack import RecordingOpa
from tests.adversarial.loadgen import MARKER_HEADER
from tests.fault_opa import Behaviour, RecordedRequest

BUDGET: Final = 0.15  # the sidecar's default --opa-timeout
NO_BODY: Final = b'{"result":{"allowed":false,"http_status":403}}'


def yes_body(marker: str) -> bytes:
    return json.dumps({"result": {"allowed": True, "headers": {MARKER_HEADER: marker}}}).encode()


ANSWER_FAULTS: Final[dict[str, Callable[[str], Behaviour]]] = {
    "garbage": lambda m: Behaviour.answer(200, yes_body(m)[:-3]),
    "5xx": lambda m: Behaviour.answer(503, yes_body(m)),
    "undefined": lambda m: Behaviour.json({}),
    "redirect": lambda m: Behaviour(status=307, body=yes_body(m), headers=(("Location", "/v1/data/x"),)),
    "truncated": lambda m: Behaviour.truncated_chunked(yes_body(m)),
    "reset": lambda m: Behaviour.reset_mid_body(after=0.01, body=yes_body(m)),
    "invalid-result": lambda m: Behaviour.json(
        {"result": {"allowed": "true", "headers": {MARKER_HEADER: m}}}
    ),
    "wrong-content-type": lambda m: Behaviour.wrong_content_type("text/plain", yes_body(m)),
    # First-wins parsers read yes, last-wins parsers no: ambiguous, so a deny.
    "duplicate-key": lambda m: Behaviour.answer(200, yes_body(m)[:-2] + b',"allowed":false}}'),
    "slow": lambda m: Behaviour.delayed(BUDGET + 0.25, Behaviour(body=yes_body(m))),
    "hang": lambda m: Behaviour.hang(),
}
MIXED: Final = "mixed"  # each answer drawn at random from the faults above and valid answers


def _check_of(request: RecordedRequest) -> tuple[str, bool]:
    """(marker, whether the policy says yes) from the check's path, /allow/<n> or /deny/<n>."""
    try:
        path = request.json()["input"]["parsed_path"]
    except (KeyError, TypeError, ValueError):
        return "?", False
    if isinstance(path, list) and len(path) == 2 and all(isinstance(p, str) for p in path):
        return path[1], path[0] == "allow"
    return "?", False


class AnswerChooser:
    """The fault OPA's chooser: the chaos policy's answer, or the current fault's."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._mode = "healthy"
        self._random = random.Random(seed)
        self.yes: set[str] = set()  # markers answered with a valid yes
        self.answers: Counter[str] = Counter()  # answers given, by fault kind ("healthy" for valid ones)
        self.asked: Counter[str] = Counter()  # OPA requests per check marker

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self._mode = mode

    def __call__(self, request: RecordedRequest) -> Behaviour:
        if request.method != "POST":
            # The sidecar's readiness probe (GET /health): not a check.
            return Behaviour(body=b"{}\n")
        marker, allow = _check_of(request)
        with self._lock:
            self.asked[marker] += 1
            mode = self._mode
            if mode == MIXED:
                mode = self._random.choice(["healthy", "healthy", *ANSWER_FAULTS])
            self.answers[mode] += 1
            if mode == "healthy" and allow:
                self.yes.add(marker)  # recorded before the answer leaves
        if mode != "healthy":
            return ANSWER_FAULTS[mode](marker)
        return Behaviour(body=yes_body(marker) if allow else NO_BODY)


@dataclass(frozen=True)
class Window:
    side: str
    kind: str
    start: float  # time.monotonic() when the fault began
    end: float  # when it was lifted: OPA answering again


class Injector(Protocol):
    def inject(self, kind: str, seconds: float) -> Window: ...


class ProcessFaults:
    """Kill/restart, pause and slow the OPA process."""

    def __init__(self, opa: RecordingOpa, side: str) -> None:
        self.opa = opa
        self.side = side

    def inject(self, kind: str, seconds: float) -> Window:
        start = time.monotonic()
        if kind == "kill":
            self.opa.kill()
            time.sleep(seconds)
            self.opa.start()  # returns once it listens again
        elif kind == "pause":
            self.opa.signal(signal.SIGSTOP)
            time.sleep(seconds)
            self.opa.signal(signal.SIGCONT)
        elif kind == "slow":
            # Stopped 200 ms of every 230: most answers miss the budget, some make it.
            while time.monotonic() - start < seconds:
                self.opa.signal(signal.SIGSTOP)
                time.sleep(0.2)
                self.opa.signal(signal.SIGCONT)
                time.sleep(0.03)
        else:
            raise ValueError(kind)
        return Window(self.side, kind, start, time.monotonic())


class AnswerFaults:
    def __init__(self, chooser: AnswerChooser, side: str) -> None:
        self.chooser = chooser
        self.side = side

    def inject(self, kind: str, seconds: float) -> Window:
        start = time.monotonic()
        self.chooser.set_mode(kind)
        time.sleep(seconds)
        self.chooser.set_mode("healthy")
        return Window(self.side, kind, start, time.monotonic())


PROCESS_SCHEDULE: Final = [("kill", 0.5), ("pause", 1.0), ("slow", 1.5)]
ANSWER_SCHEDULE: Final = [(kind, 1.0) for kind in [*ANSWER_FAULTS, MIXED]]


def run_schedule(
    injector: Injector,
    steps: list[tuple[str, float]],
    gap: float,
    keep_going: Callable[[], bool],
    windows: list[Window],
) -> None:
    """Healthy gap, fault window, healthy gap, ...: cycles through `steps` while
    `keep_going()`, and at least once; ends on a healthy gap, so every recovery shows."""
    first = True
    while first or keep_going():
        first = False
        for kind, seconds in steps:
            time.sleep(gap)
            windows.append(injector.inject(kind, seconds))
    time.sleep(gap)
