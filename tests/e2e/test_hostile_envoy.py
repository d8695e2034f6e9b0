"""The hostile Envoy: the deploy/envoy configuration with `failure_mode_allow: true`.

Whatever OPA does, the sidecar answers with a deny CheckResponse in time, so even an
Envoy that lets errors through enforces it: the client gets the deny, the upstream
never sees the request, and `ext_authz.failure_mode_allowed` stays 0. Only a dead
sidecar gets through such an Envoy, which is why the shipped configuration fails closed.
"""

from __future__ import annotations

import socket

import pytest

from tests.e2e.stack import Stack, running_stack
from tests.fault_opa import Behaviour, FaultOpa

FAULTS = [
    pytest.param(Behaviour.delayed(1.0), "opa_timeout", id="slow-beyond-budget"),
    pytest.param(Behaviour.hang(), "opa_timeout", id="hang"),
    pytest.param(Behaviour.slow_drip(0.05), "opa_timeout", id="slow-drip"),
    pytest.param(Behaviour.answer(200, b'{"result": tru'), "opa_bad_response", id="garbage-json"),
    pytest.param(Behaviour.json({}), "undefined", id="undefined"),
    pytest.param(Behaviour.answer(500, b'{"code":"internal_error"}'), "opa_http_status", id="500"),
    pytest.param(Behaviour.answer(503, b""), "opa_http_status", id="503"),
    pytest.param(Behaviour.redirect("http://127.0.0.1:1/v1/data/x"), "opa_http_status", id="redirect"),
    pytest.param(Behaviour.truncated_chunked(), "opa_bad_response", id="truncated"),
    pytest.param(Behaviour.close_early(), "opa_unreachable", id="closed-before-answer"),
    pytest.param(Behaviour.reset_mid_body(after=0.02), "opa_unreachable", id="reset"),
    pytest.param(Behaviour.json({"result": "true"}), "invalid_result", id="wrong-type-result"),
    pytest.param(Behaviour.json({"result": {"allowed": 1}}), "invalid_result", id="wrong-type-allowed"),
    pytest.param(Behaviour.huge(2 * 1024 * 1024), "opa_bad_response", id="huge-answer"),
]


@pytest.mark.parametrize(("behaviour", "reason"), FAULTS)
def test_every_opa_fault_is_denied_through_a_fail_open_envoy(
    hostile_stack: Stack,
    fault_opa: FaultOpa,
    behaviour: Behaviour,
    reason: str,
    request: pytest.FixtureRequest,
) -> None:
    fault_opa.set(behaviour)
    before = hostile_stack.authz_counters()
    seen_before = len(hostile_stack.upstream.received)
    path = f"/orders/{request.node.callspec.id}"

    response = hostile_stack.envoy.request("GET", path)

    assert response.status == 403, response.text
    assert fault_opa.count == 1
    assert len(hostile_stack.upstream.received) == seen_before
    after = hostile_stack.authz_counters()
    assert after["failure_mode_allowed"] == 0
    assert after["denied"] == before["denied"] + 1
    assert (after["error"], after["ok"]) == (before["error"], before["ok"])
    assert hostile_stack.access_log_line(path)["authz_deny_reason"] == reason


def test_the_policys_own_deny_status_holds_through_a_fail_open_envoy(
    hostile_stack: Stack, fault_opa: FaultOpa
) -> None:
    fault_opa.set(Behaviour.json({"result": {"allowed": False, "http_status": 401, "body": "who?\n"}}))
    response = hostile_stack.envoy.request("GET", "/orders/policy-401")
    assert (response.status, response.body) == (401, b"who?\n")
    assert hostile_stack.authz_counters()["failure_mode_allowed"] == 0


def test_a_valid_yes_still_allows_through_the_hostile_envoy(
    hostile_stack: Stack, fault_opa: FaultOpa
) -> None:
    """The control: the stack does let a real yes through, so the denials above mean something."""
    response = hostile_stack.envoy.request("GET", "/orders/yes")
    assert response.status == 200, response.text
    assert response.json()["path"] == "/orders/yes"


def test_opa_down_is_denied_but_a_dead_sidecar_is_let_through_by_a_fail_open_envoy() -> None:
    """OPA down: the sidecar denies, and even this Envoy enforces it. Sidecar down: there
    is no deny to enforce, and this Envoy lets the request through; that is why the
    configuration in deploy/envoy keeps failure_mode_allow: false."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        opa_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with running_stack(opa_url, envoy_fail_open=True) as stack:
            response = stack.envoy.request("GET", "/orders/opa-down")
            assert response.status == 403
            assert stack.upstream.received == []
            counters = stack.authz_counters()
            assert (counters["denied"], counters["failure_mode_allowed"]) == (1, 0)
            assert stack.access_log_line("/orders/opa-down")["authz_deny_reason"] == "opa_unreachable"

            stack.sidecar.kill()
            response = stack.envoy.request("GET", "/orders/sidecar-down")
            assert response.status == 200
            assert [r["path"] for r in stack.upstream.received] == ["/orders/sidecar-down"]
            assert stack.authz_counters()["failure_mode_allowed"] == 1
