"""--shadow-decision-path: the candidate's answer, or failure, never changes the
enforced verdict nor makes the check wait for it."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.fixtures.sidecar import running_sidecar

ENFORCED = "/v1/data/envoy/authz/allow"
CANDIDATE = "/v1/data/envoy/authz/candidate"


def by_path(enforced: Behaviour, shadow: Behaviour) -> object:
    def choose(request: RecordedRequest) -> Behaviour:
        return enforced if request.path == ENFORCED else shadow

    return choose


SHADOWS = [
    pytest.param(Behaviour.json({"result": True}), "allow", id="shadow-allows"),
    pytest.param(Behaviour.json({"result": False}), "deny", id="shadow-denies"),
    pytest.param(Behaviour.answer(500), "deny", id="shadow-500"),
    pytest.param(Behaviour.answer(body=b"{garbage"), "deny", id="shadow-garbage"),
    pytest.param(Behaviour.close_early(), "deny", id="shadow-unreachable"),
    pytest.param(Behaviour.delayed(1.5), "deny", id="shadow-too-slow"),
]


@pytest.mark.parametrize("enforced_allows", [True, False])
@pytest.mark.parametrize(("shadow", "shadow_outcome"), SHADOWS)
async def test_the_enforced_verdict_is_untouched(
    fault_opa: FaultOpa, enforced_allows: bool, shadow: Behaviour, shadow_outcome: str
) -> None:
    fault_opa.set(by_path(Behaviour.json({"result": enforced_allows}), shadow))  # type: ignore[arg-type]
    settings = {"shadow_decision_path": "envoy/authz/candidate", "opa_timeout": 1.0}
    async with running_sidecar(fault_opa.url, **settings) as sidecar:
        started = time.monotonic()
        response = await sidecar.check(check_request())
        elapsed = time.monotonic() - started
        assert (response.status.code == 0) is enforced_allows
        assert elapsed < 0.6  # never waits for a slow shadow (which takes its whole 1 s budget)
        for _ in range(200):  # the shadow line follows when the candidate has answered
            if len(sidecar.decisions()) == 2:
                break
            await asyncio.sleep(0.01)
        enforced_line, shadow_line = sidecar.decisions()
        samples = sidecar.sidecar.metrics.registry
        enforced = "allow" if enforced_allows else "deny"
        count = samples.get_sample_value(
            "opa_sidecar_shadow_checks_total", {"enforced": enforced, "shadow": shadow_outcome}
        )
    assert enforced_line["outcome"] == enforced
    assert shadow_line["decision_id"] == enforced_line["decision_id"]
    assert (shadow_line["enforced"], shadow_line["shadow"]) == (enforced, shadow_outcome)
    assert shadow_line["agrees"] is (enforced == shadow_outcome)
    assert shadow_line["shadow_decision_path"] == "envoy/authz/candidate"
    assert count == 1
    assert sorted(r.path for r in fault_opa.requests) == sorted([CANDIDATE, ENFORCED])


async def test_no_shadow_requests_without_the_flag(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url) as sidecar:
        await sidecar.check(check_request())
    assert [r.path for r in fault_opa.requests] == [ENFORCED]


async def test_checks_denied_before_asking_opa_ask_no_shadow(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url, shadow_decision_path="envoy/authz/candidate") as sidecar:
        await sidecar.check(check_request("GET", "/%zz"))
        await asyncio.sleep(0.05)
        assert len(sidecar.decisions()) == 1
    assert fault_opa.count == 0
