"""Differential test of issue 14: the policy sees exactly the request the application
receives, or the request is refused.

Real Envoy 1.40 with each shipped configuration (gRPC and HTTP mode) -> the sidecar process
-> a recording OPA that allows everything, in front of an upstream that parses each request
with werkzeug, python-multipart, Starlette and the standard library. Hypothesis sends
hostile-but-plausible requests over raw HTTP/1.1 and HTTP/2 sockets (HTTP/1.1 only to the
HTTP-mode listener, which takes nothing else); for each, either it
was refused before the upstream, or the OPA input equals what the upstream got and parsed
(`view_check`). An allowed request on which the application's own parsers disagree fails
too: the sidecar should have refused the ambiguity.

The default run is sized for CI; `RUN_SLOW=1` adds the long survey, which counts outcomes
instead of stopping at the first mismatch (DIFFERENTIAL_EXAMPLES sets its size).
"""

from __future__ import annotations

import collections
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.differential.differential_stack import DifferentialStack, differential_stack
from tests.differential.strategies import BUFFER_LIMIT, WireRequest, wire_requests
from tests.differential.view_check import Judgement, Observation, application_kinds, judge
from tests.differential.wire_client import send
from tests.fault_opa import FaultOpa

CI_EXAMPLES: Final = int(os.environ.get("DIFFERENTIAL_CI_EXAMPLES", "80"))
LONG_EXAMPLES: Final = int(os.environ.get("DIFFERENTIAL_EXAMPLES", "1500"))
_DECISION_WAIT: Final = 1.0
_RELAXED: Final = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module", params=["grpc", "http"])
def stack(request: pytest.FixtureRequest) -> Iterator[DifferentialStack]:
    with FaultOpa() as opa, differential_stack(request.param, opa) as running:
        yield running


def observe(stack: DifferentialStack, request: WireRequest) -> Observation:
    marker = uuid.uuid4().hex
    decisions_before = len(stack.sidecar.decisions())
    checks_before = stack.opa.count
    response = send(request, stack.envoy.port, marker)
    upstream = stack.upstream.record(marker)
    inputs = [
        r.json()["input"]
        for r in stack.opa.requests[checks_before:]
        if r.path.startswith("/v1/data/") and marker.encode() in r.body
    ]
    decision = None
    if response.status != 200:
        deadline = time.monotonic() + _DECISION_WAIT
        while decision is None and time.monotonic() < deadline:
            decision = next(iter(stack.sidecar.decisions()[decisions_before:]), None)
            if decision is None:
                time.sleep(0.02)
    return Observation(request, marker, response.status, response.body, inputs, upstream, decision)


def report(stack: DifferentialStack, obs: Observation, verdict: Judgement) -> str:
    lines = [f"[{stack.mode} mode] {verdict.outcome} {verdict.reason}", obs.request.describe()]
    lines += [f"  - {m}" for m in verdict.mismatches]
    if obs.opa_inputs:
        doc = obs.opa_inputs[0]
        http = doc["attributes"]["request"]["http"]
        view = {k: doc.get(k) for k in ("parsed_path", "parsed_query", "parsed_body", "truncated_body")}
        lines.append(f"policy saw: {json.dumps(view)[:800]} headers={json.dumps(http.get('headers'))[:800]}")
    if obs.upstream is not None:
        parsers = {
            name: (v.kind, v.value if v.error is None else v.error)
            for name, v in obs.upstream.parsers.items()
        }
        lines.append(
            f"upstream got: {obs.upstream.method} {obs.upstream.target!r} headers={obs.upstream.headers!r}"
        )
        lines.append(f"upstream body: {obs.upstream.body[:400]!r}")
        lines.append(f"parsers: {repr(parsers)[:1500]}")
    return "\n".join(lines)


def _append_finding(text: str) -> None:
    path = os.environ.get("DIFFERENTIAL_FINDINGS")
    if path:
        with open(path, "a", encoding="utf-8") as findings:
            findings.write(f"\n```\n{text}\n```\n")


# Room for hypothesis to shrink a failure to its smallest request.
@pytest.mark.timeout(300)
@settings(max_examples=CI_EXAMPLES, deadline=None, suppress_health_check=_RELAXED, database=None)
@given(data=st.data())
def test_an_allowed_request_is_the_request_the_application_parses(
    stack: DifferentialStack, data: st.DataObject
) -> None:
    request = data.draw(wire_requests(stack.protocols), label="request")
    obs = observe(stack, request)
    verdict = judge(obs)
    if verdict.mismatches:
        text = report(stack, obs, verdict)
        _append_finding(text)
        raise AssertionError(text)


@pytest.mark.slow
@pytest.mark.timeout(120 + 2 * LONG_EXAMPLES)
def test_long_survey_of_request_views(stack: DifferentialStack) -> None:
    """Counts every outcome over many requests; fails at the end if any allowed request differed."""
    counts: collections.Counter[str] = collections.Counter()
    failures: list[str] = []

    @settings(max_examples=LONG_EXAMPLES, deadline=None, suppress_health_check=_RELAXED, database=None)
    @given(request=wire_requests(stack.protocols))
    def survey(request: WireRequest) -> None:
        obs = observe(stack, request)
        verdict = judge(obs)
        counts["requests"] += 1
        counts[f"{verdict.outcome}"] += 1
        counts[f"{request.protocol} {verdict.outcome}"] += 1
        size = len(request.sent_body)
        limit = "below" if size < BUFFER_LIMIT else "at" if size == BUFFER_LIMIT else "above"
        counts[f"body {limit} the {BUFFER_LIMIT}-byte limit: {verdict.outcome}"] += 1
        if verdict.outcome == "allowed" and obs.upstream is not None and obs.opa_inputs:
            truncated = obs.opa_inputs[0].get("truncated_body")
            counts[f"allowed, body {limit} the limit, truncated_body {truncated}"] += 1
            for kind in application_kinds(obs.upstream) if obs.upstream.body else ():
                counts[f"allowed {kind} body"] += 1
        if verdict.outcome == "refused":
            counts[f"refused: {verdict.reason.split(':')[0]}"] += 1
            counts[f"refused detail: {verdict.reason}"] += 1
        if verdict.mismatches:
            counts["mismatched"] += 1
            for mismatch in verdict.mismatches:
                counts[f"mismatch: {mismatch.split(':')[0]}"] += 1
            text = report(stack, obs, verdict)
            _append_finding(text)
            failures.append(text)

    survey()
    summary = json.dumps({"mode": stack.mode, **dict(sorted(counts.items()))}, indent=1)
    print(summary)
    _append_finding(f"long survey counts:\n{summary}")
    assert not failures, f"{len(failures)} allowed requests differed; first:\n{failures[0]}\n{summary}"
