"""Property: the sidecar allows a check if and only if the request is parseable and OPA
answered it with a valid yes within the budget; every check gets a CheckResponse (never
a gRPC error); OPA is asked at most once per check, and exactly once when parseable.

Generated hostile CheckRequests meet generated OPA answers (from the fault OPA), in
sequences, sometimes concurrently. Each check carries a marker header that the fault
OPA's chooser reads from the input it receives, so every OPA request is matched to the
check it belongs to. Checks whose marker does not survive (no attributes, damaged bytes)
run alone, and the chooser answers whatever arrives while they run.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar.envoy.response import OK, PERMISSION_DENIED, UNAUTHENTICATED
from tests.adversarial.answer_strategies import Answer, answers
from tests.adversarial.background import BackgroundSidecar
from tests.adversarial.process_monitor import longest_wait_ms, thread_waits_ns
from tests.adversarial.request_strategies import (
    MARKER_HEADER,
    Expectation,
    RequestTemplate,
    check_requests,
    expectation,
)
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest

BUDGET = 0.4  # --opa-timeout; "slow" answers come 0.3 s after it, valid ones at once
MAX_REQUEST_BYTES = 128 * 1024
MAX_RESPONSE_BYTES = 64 * 1024
CALL_TIMEOUT = 5.0  # the gRPC deadline: long, so the budget is what counts
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
CI_EXAMPLES = 160
SOLO = "<solo>"
# A valid yes chosen this early must allow; one the sidecar still timed out on is excused
# only if the machine kept a thread of this process (the sidecar's, the fault OPA's)
# waiting for a CPU this long during the call.
SURE_IN_TIME = BUDGET / 2
STARVED_MS = 100.0
LONG_EXAMPLES = 3000


def _marker_of(request: RecordedRequest) -> str | None:
    try:
        value = request.json()["input"]["attributes"]["request"]["http"]["headers"][MARKER_HEADER]
    except (KeyError, TypeError, ValueError):
        return None
    return value if isinstance(value, str) else None


@dataclass
class Router:
    """The fault OPA's chooser: the answer generated for the marker in the input, or the
    answer of the one check running alone."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_marker: dict[str, Answer] = field(default_factory=dict)
    solo: Answer | None = None
    asked: Counter[str] = field(default_factory=Counter)
    strays: list[str | None] = field(default_factory=list)  # OPA requests no check explains
    answered_at: dict[str, float] = field(default_factory=dict)  # when the answer was chosen

    def __call__(self, request: RecordedRequest) -> Behaviour:
        marker = _marker_of(request)
        with self.lock:
            if self.solo is not None:
                self.asked[SOLO] += 1
                self.answered_at[SOLO] = time.monotonic()
                return self.solo.behaviour
            answer = self.by_marker.get(marker) if marker is not None else None
            if marker is None or answer is None:
                self.strays.append(marker)
                return Behaviour.answer(500, b'{"code":"stray request"}')
            self.asked[marker] += 1
            self.answered_at[marker] = time.monotonic()
            return answer.behaviour


@dataclass
class Harness:
    fault: FaultOpa
    sidecar: BackgroundSidecar
    router: Router
    check: grpc.UnaryUnaryMultiCallable[bytes, bytes]
    markers: Iterator[int] = field(default_factory=itertools.count)
    expected_opa_requests: int = 0
    checks: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    starved_timeouts: int = 0  # valid yeses timed out while the machine starved the test


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    router = Router()
    with FaultOpa() as fault:
        fault.set(router)
        overrides: dict[str, Any] = {
            "opa_timeout": BUDGET,
            "max_request_bytes": MAX_REQUEST_BYTES,
            "opa_max_response_bytes": MAX_RESPONSE_BYTES,
        }
        with BackgroundSidecar(fault.url, **overrides) as sidecar:
            channel = grpc.insecure_channel(sidecar.target, options=[("grpc.max_receive_message_length", -1)])
            check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                CHECK_METHOD, request_serializer=None, response_deserializer=None
            )
            h = Harness(fault, sidecar, router, check)
            yield h
            channel.close()
            # Nothing arrives late: every OPA request is one a check explains.
            time.sleep(BUDGET)
            assert fault.count == h.expected_opa_requests, (fault.count, h.expected_opa_requests)
            assert not fault.errors
            assert not router.strays
            deadline = time.monotonic() + 5
            while sidecar.inflight and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sidecar.inflight == 0
            reasons = Counter(d.get("reason", "allow") for d in sidecar.decisions())
            assert sum(reasons.values()) == h.checks
            print(f"\n{h.checks} checks: {dict(h.outcomes)}; sidecar reasons: {dict(reasons)}")
            if h.starved_timeouts:
                warnings.warn(
                    f"{h.starved_timeouts} valid yeses came too late on a starved machine", stacklevel=1
                )


@dataclass(frozen=True)
class Case:
    marker: str
    wire: bytes
    expect: Expectation
    answer: Answer

    @property
    def marked(self) -> bool:
        """OPA will see this check's own marker (or will not be asked at all)."""
        return not self.expect.parseable or self.expect.marker == self.marker


@dataclass(frozen=True)
class Call:
    """When a check (or a concurrent batch) was sent, and the longest any thread of this
    process waited for a CPU until the answers were in."""

    sent: float
    waited_ms: float


def _verify(h: Harness, case: Case, reply: bytes | grpc.RpcError, call: Call, key: str) -> None:
    """`key`: the marker the router counted this check's OPA requests under."""
    with h.router.lock:
        asked = h.router.asked.pop(key, 0)
        answered_at = h.router.answered_at.pop(key, None)
    assert not isinstance(reply, grpc.RpcError), f"gRPC error instead of a CheckResponse: {reply!r}"
    response = CheckResponse.FromString(reply)
    allowed = response.status.code == OK
    kind = response.WhichOneof("http_response")
    if allowed:
        assert kind == "ok_response", response
    else:
        assert response.status.code in (PERMISSION_DENIED, UNAUTHENTICATED), response
        assert kind == "denied_response", response
    reason = "allow" if allowed else str(response.dynamic_metadata["deny_reason"])
    context = f"{case.answer} parseable={case.expect.parseable} -> {reason}"
    assert asked == (1 if case.expect.parseable else 0), f"{asked} OPA requests: {context}"
    h.checks += 1
    h.outcomes[reason if case.expect.parseable else "unparseable"] += 1
    if not case.expect.parseable:
        assert reason == "bad_request", context
        return
    if case.answer.valid_yes and reason == "opa_timeout":
        # Not "in time" after all, if OPA chose its answer late or the machine held the
        # threads back; otherwise a valid yes was lost.
        late = answered_at is not None and answered_at - call.sent >= SURE_IN_TIME
        assert late or call.waited_ms >= STARVED_MS, f"{context}; CPU wait {call.waited_ms} ms"
        h.starved_timeouts += 1
        return
    assert allowed == case.answer.valid_yes, context
    if not allowed:
        assert reason in case.answer.reasons, context


def run_cases(h: Harness, pairs: list[tuple[RequestTemplate, Answer]], concurrent: bool) -> None:
    cases = []
    for template, answer in pairs:
        marker = f"check-{next(h.markers)}"
        wire = template.wire(marker)
        cases.append(Case(marker, wire, expectation(wire, MAX_REQUEST_BYTES), answer))
    h.expected_opa_requests += sum(c.expect.parseable for c in cases)
    marked = [c for c in cases if c.marked]
    with h.router.lock:
        h.router.by_marker = {c.marker: c.answer for c in marked}
    sent, waits = time.monotonic(), thread_waits_ns(os.getpid())
    if concurrent:
        futures = [h.check.future(c.wire, timeout=CALL_TIMEOUT) for c in marked]
        replies = [_result(f) for f in futures]
    else:
        replies = [_call(h, c.wire) for c in marked]
    call = Call(sent, longest_wait_ms(waits, thread_waits_ns(os.getpid())))
    for case, reply in zip(marked, replies, strict=True):
        _verify(h, case, reply, call, case.marker)
    for case in (c for c in cases if not c.marked):
        with h.router.lock:
            h.router.solo = case.answer
        sent, waits = time.monotonic(), thread_waits_ns(os.getpid())
        try:
            reply = _call(h, case.wire)
        finally:
            with h.router.lock:
                h.router.solo = None
        _verify(h, case, reply, Call(sent, longest_wait_ms(waits, thread_waits_ns(os.getpid()))), SOLO)


def _call(h: Harness, wire: bytes) -> bytes | grpc.RpcError:
    try:
        return h.check(wire, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return exc


def _result(future: grpc.Future[bytes]) -> bytes | grpc.RpcError:
    try:
        return future.result()
    except grpc.RpcError as exc:
        return exc


_cases = st.lists(st.tuples(check_requests(), answers(BUDGET, MAX_RESPONSE_BYTES)), min_size=1, max_size=6)
_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}


@pytest.mark.timeout(300)
@settings(max_examples=CI_EXAMPLES, **_SETTINGS)
@given(pairs=_cases, concurrent=st.booleans())
def test_allows_if_and_only_if_opa_answered_a_valid_yes_in_time(
    harness: Harness, pairs: list[tuple[RequestTemplate, Answer]], concurrent: bool
) -> None:
    run_cases(harness, pairs, concurrent)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(max_examples=LONG_EXAMPLES, **_SETTINGS)
@given(pairs=_cases, concurrent=st.booleans())
def test_allows_if_and_only_if_opa_answered_a_valid_yes_in_time_long(
    harness: Harness, pairs: list[tuple[RequestTemplate, Answer]], concurrent: bool
) -> None:
    run_cases(harness, pairs, concurrent)
