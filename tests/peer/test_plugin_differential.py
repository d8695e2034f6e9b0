"""The same CheckRequests against the OPA-Envoy plugin and against the sidecar asking the
real OPA, with the same policy and data: decisions, headers, statuses and bodies must be
the same, or differ exactly as a deliberate difference (tests/peer/deliberate.py) says.

The peer is the plugin itself when it is installed (`scripts/install-opa-envoy-plugin.sh`),
and always the plugin as documented (tests/peer/documented_plugin.py); with both at hand,
the documented one is held to the plugin.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from tests.fixtures.opa import OpaProcess
from tests.fixtures.sidecar import running_sidecar
from tests.peer.conftest import DECISION_PATH
from tests.peer.corpus import generated_cases, named_cases
from tests.peer.deliberate import explain
from tests.peer.documented_plugin import DocumentedPlugin
from tests.peer.outcome import Outcome, ask_over_grpc, differences, outcome_of
from tests.peer.plugin_process import plugin_binary

PEERS = ["documented", *(["plugin"] if plugin_binary() else [])]
CASES = named_cases()
GENERATED = generated_cases(200, seed=16)


async def ask_sidecar(opa: OpaProcess, requests: list[CheckRequest]) -> list[tuple[Outcome, dict[str, Any]]]:
    async with running_sidecar(opa.url, decision_path=DECISION_PATH, opa_timeout=2.0) as sidecar:
        outcomes = [outcome_of(await sidecar.check(r, timeout=5.0)) for r in requests]
        decisions = sidecar.decisions()
    assert len(decisions) == len(requests)
    return list(zip(outcomes, decisions, strict=True))


async def ask_peer(kind: str, fixtures: pytest.FixtureRequest, requests: list[CheckRequest]) -> list[Outcome]:
    if kind == "documented":
        model = DocumentedPlugin(fixtures.getfixturevalue("peer_opa"), DECISION_PATH)
        return [await model.check(r) for r in requests]
    plugin = fixtures.getfixturevalue("plugin")
    return await ask_over_grpc(plugin.grpc_target, requests)


def show(sidecar: Outcome, decision: dict[str, Any], peer: Outcome) -> str:
    why = f"{decision.get('outcome')} {decision.get('reason')}: {decision.get('detail')}"
    return f" (sidecar {why}; sidecar / peer)\n{differences(sidecar, peer)}"


@pytest.mark.parametrize("peer", PEERS)
async def test_named_requests_answer_alike_or_differ_as_meant(
    peer: str, peer_opa: OpaProcess, request: pytest.FixtureRequest
) -> None:
    requests = [case.request for case in CASES]
    sidecar = await ask_sidecar(peer_opa, requests)
    peer_outcomes = await ask_peer(peer, request, requests)
    wrong = []
    for case, (ours, decision), theirs in zip(CASES, sidecar, peer_outcomes, strict=True):
        found = explain(case.request, ours, decision, theirs)
        if found != case.expect or (case.expect is None and ours != theirs):
            wrong.append(
                f"{case.name}: expected {case.expect!r}, found {found!r}{show(ours, decision, theirs)}"
            )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("peer", PEERS)
async def test_generated_requests_answer_alike_or_differ_as_meant(
    peer: str, peer_opa: OpaProcess, request: pytest.FixtureRequest
) -> None:
    sidecar = await ask_sidecar(peer_opa, GENERATED)
    peer_outcomes = await ask_peer(peer, request, GENERATED)
    kinds: collections.Counter[str] = collections.Counter()
    unexplained = []
    for check, (ours, decision), theirs in zip(GENERATED, sidecar, peer_outcomes, strict=True):
        if ours == theirs:
            kinds["same"] += 1
            continue
        found = explain(check, ours, decision, theirs)
        kinds[found or "unexplained"] += 1
        if found is None:
            unexplained.append(f"{check.attributes.request.http.path}{show(ours, decision, theirs)}")
    assert not unexplained, f"{kinds}\n" + "\n".join(unexplained[:10])
    # The generator must reach both kinds: answers alike, and refusals the plugin lacks.
    assert kinds["same"] >= len(GENERATED) // 4, kinds
    assert len(kinds) >= 3, kinds


if plugin_binary():

    async def test_the_documented_plugin_is_the_plugin(
        peer_opa: OpaProcess, request: pytest.FixtureRequest
    ) -> None:
        """On every request the sidecar takes, the model answers as the plugin does; a parse
        error's body is Go's wording in the plugin, so only its prefix is compared."""
        requests = [case.request for case in CASES] + GENERATED
        sidecar = await ask_sidecar(peer_opa, requests)
        taken = [
            r
            for r, (_, decision) in zip(requests, sidecar, strict=True)
            if decision.get("reason") != "bad_request"
        ]
        documented = await ask_peer("documented", request, taken)
        real = await ask_peer("plugin", request, taken)
        wrong = [
            f"{check.attributes.request.http.path} (documented / plugin)\n{differences(ours, theirs)}"
            for check, ours, theirs in zip(taken, documented, real, strict=True)
            if _comparable(ours) != _comparable(theirs)
        ]
        assert len(taken) > len(CASES), "most requests are taken"
        assert not wrong, "\n".join(wrong)


def _comparable(outcome: Outcome) -> Outcome:
    if (
        outcome.kind == "deny"
        and outcome.http_status == 400
        and outcome.body.startswith("request_parse_error: ")
    ):
        return Outcome(**{**outcome.__dict__, "body": "request_parse_error: ..."})
    return outcome
