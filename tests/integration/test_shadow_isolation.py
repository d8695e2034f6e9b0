"""The shadow evaluation stays on the side: it never competes with the enforced query
for OPA, and a large or awkward candidate answer never delays enforced checks."""

from __future__ import annotations

import asyncio
import json
import time

from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.fixtures.sidecar import running_sidecar

ENFORCED = "/v1/data/envoy/authz/allow"
SHADOW = {"shadow_decision_path": "envoy/authz/candidate"}


async def _decisions_with_shadow_lines(sidecar: object, checks: int) -> list[dict[str, object]]:
    for _ in range(300):
        lines = sidecar.decisions()  # type: ignore[attr-defined]
        if len(lines) >= 2 * checks:
            return lines  # type: ignore[no-any-return]
        await asyncio.sleep(0.01)
    raise AssertionError("the shadow lines did not follow")


async def test_the_candidate_is_asked_only_once_the_enforced_answer_is_in(fault_opa: FaultOpa) -> None:
    arrivals: dict[str, float] = {}

    def answer(request: RecordedRequest) -> Behaviour:
        arrivals[request.path] = time.monotonic()
        return Behaviour.delayed(0.1) if request.path == ENFORCED else Behaviour.json({"result": True})

    fault_opa.set(answer)
    async with running_sidecar(fault_opa.url, **SHADOW) as sidecar:
        response = await sidecar.check(check_request())
        await _decisions_with_shadow_lines(sidecar, 1)

    assert response.status.code == 0
    assert arrivals["/v1/data/envoy/authz/candidate"] - arrivals[ENFORCED] >= 0.09


def _awkward_answer() -> bytes:
    """About 1 MiB of valid JSON that is slow to parse and to check: 60,000 headers."""
    result = {"allowed": True, "headers": {f"x-h{i}": "v" for i in range(60_000)}}
    return json.dumps({"result": result}).encode()


async def test_a_large_awkward_candidate_answer_does_not_delay_enforced_checks(fault_opa: FaultOpa) -> None:
    awkward = Behaviour.answer(200, _awkward_answer())
    fault_opa.set(lambda request: Behaviour.json({"result": False}) if request.path == ENFORCED else awkward)
    latencies = []
    async with running_sidecar(fault_opa.url, **SHADOW) as sidecar:
        for _ in range(8):
            started = time.perf_counter()
            response = await sidecar.check(check_request())
            latencies.append(time.perf_counter() - started)
            assert response.status.code == 7
            await asyncio.sleep(0.005)  # the candidate's answer arrives meanwhile
        lines = await _decisions_with_shadow_lines(sidecar, 8)

    # Parsing and checking such an answer on the loop took about 0.1 s, and the next
    # check waited for it; it is now refused as too large without being parsed.
    assert max(latencies[1:]) < 0.05, latencies
    shadow_lines = [line for line in lines if "shadow" in line]
    assert {line["shadow_reason"] for line in shadow_lines} == {"opa_bad_response"}
