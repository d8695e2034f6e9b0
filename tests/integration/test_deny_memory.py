"""Deny memory over real gRPC: hold, freeze and observe, credential switches,
windows that end, the decision log and the metrics; and the memory shared
through a real redis-server by two sidecars, with the store killed, paused
and slowed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar.envoy.response import PERMISSION_DENIED
from sidecar.signals import parse_pointers
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.redis_server import RedisServer, running_redis

AGENT = "spiffe://example.org/ns/agents/sa/coder"
OTHER = "spiffe://example.org/ns/agents/sa/reviewer"


def admin_is_denied(request: RecordedRequest) -> Behaviour:
    path = request.json()["input"]["attributes"]["request"]["http"]["path"]
    return Behaviour.json({"result": not path.startswith("/admin")})


FIRST_TOKEN = "Bearer one"


def ask(path: str, principal: str = AGENT, token: str = FIRST_TOKEN) -> Any:
    return check_request("POST", path, principal=principal, headers={"authorization": token})


def reason(response: CheckResponse) -> str:
    if response.status.code == 0:
        return "allow"
    assert response.status.code == PERMISSION_DENIED
    return str(response.dynamic_metadata["deny_reason"])


@contextlib.asynccontextmanager
async def memory_sidecar(opa: FaultOpa, **overrides: Any) -> AsyncIterator[SidecarHandle]:
    opa.set(admin_is_denied)
    settings: dict[str, Any] = {"deny_memory": 30.0, "opa_timeout": 0.5} | overrides
    async with running_sidecar(opa.url, **settings) as sidecar:
        yield sidecar


async def test_hold_over_grpc(fault_opa: FaultOpa) -> None:
    async with memory_sidecar(fault_opa) as sidecar:
        first = await sidecar.check(ask("/admin/users?page=2"))
        retries = [await sidecar.check(ask(f"/admin/users?page={n}")) for n in range(3)]
        other = await sidecar.check(ask("/orders"))
        switched = await sidecar.check(ask("/orders", token="Bearer two"))
        bystander = await sidecar.check(ask("/admin/users", principal=OTHER))
        entries = sidecar.decisions()
        exposition = sidecar.sidecar.metrics.exposition().decode()
    assert reason(first) == "policy_denied"
    assert [reason(r) for r in retries] == ["held_after_deny"] * 3
    assert (reason(other), reason(switched), reason(bystander)) == (
        "allow",
        "credential_switch",
        "policy_denied",
    )
    # OPA heard the first deny, the other action and the other caller; never a held retry.
    asked = [r.json()["input"]["attributes"]["request"]["http"]["path"] for r in fault_opa.requests]
    assert asked == ["/admin/users?page=2", "/orders", "/admin/users"]
    first_id = entries[0]["decision_id"]
    for entry in entries[1:4]:
        assert (entry["reason"], entry["after_deny"], entry["earlier_decision_id"]) == (
            "held_after_deny",
            "retry",
            first_id,
        )
        assert first_id in entry["detail"] and 0 <= entry["seconds_since_deny"] < 5
    assert (entries[4]["outcome"], entries[4]["after_deny"]) == ("allow", "other_action")
    assert (entries[5]["reason"], entries[5]["after_deny"]) == ("credential_switch", "credential_switch")
    assert "after_deny" not in entries[6]
    assert "Bearer" not in str(entries)  # the credential is never logged
    assert 'opa_sidecar_checks_after_deny_total{held="true",kind="retry"} 3.0' in exposition
    assert 'opa_sidecar_checks_after_deny_total{held="false",kind="other_action"} 1.0' in exposition
    assert 'opa_sidecar_checks_total{outcome="deny",reason="held_after_deny"} 3.0' in exposition


async def test_freeze_and_a_window_that_ends(fault_opa: FaultOpa) -> None:
    async with memory_sidecar(fault_opa, deny_memory=0.4, deny_memory_mode="freeze") as sidecar:
        assert reason(await sidecar.check(ask("/admin"))) == "policy_denied"
        assert reason(await sidecar.check(ask("/orders"))) == "held_after_deny"
        await asyncio.sleep(0.45)
        assert reason(await sidecar.check(ask("/orders"))) == "allow"
        assert "after_deny" not in sidecar.decisions()[-1]


async def test_observe_marks_without_changing_verdicts(fault_opa: FaultOpa) -> None:
    async with memory_sidecar(fault_opa, deny_memory_mode="observe") as sidecar:
        verdicts = [reason(await sidecar.check(ask(p))) for p in ("/admin", "/admin", "/orders")]
        verdicts.append(reason(await sidecar.check(ask("/orders", token="Bearer two"))))
        marks = [e.get("after_deny") for e in sidecar.decisions()]
    assert verdicts == ["policy_denied", "policy_denied", "allow", "allow"]
    assert marks == [None, "retry", "other_action", "credential_switch"]
    assert fault_opa.count == 4


async def test_off_by_default_and_each_check_judged_alone(fault_opa: FaultOpa) -> None:
    fault_opa.set(admin_is_denied)
    async with running_sidecar(fault_opa.url) as sidecar:
        assert sidecar.sidecar.deny_memory is None
        await sidecar.check(ask("/admin"))
        assert reason(await sidecar.check(ask("/orders", token="Bearer two"))) == "allow"


# -- the shared store ------------------------------------------------------------------------


def store_settings(redis: RedisServer, key_file: Path, **more: Any) -> dict[str, Any]:
    return {"deny_memory_store": redis.url, "deny_memory_key_file": str(key_file)} | more


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "deny-memory.key"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    return path


async def test_two_sidecars_share_one_store(fault_opa: FaultOpa, key_file: Path) -> None:
    with running_redis() as redis:
        shared = store_settings(redis, key_file)
        async with memory_sidecar(fault_opa, **shared) as one, memory_sidecar(fault_opa, **shared) as two:
            assert reason(await one.check(ask("/admin"))) == "policy_denied"
            assert reason(await two.check(ask("/admin"))) == "held_after_deny"
            assert reason(await two.check(ask("/orders", token="Bearer two"))) == "credential_switch"
            assert two.decisions()[0]["earlier_decision_id"] == one.decisions()[0]["decision_id"]
        keys = redis.keys()
    assert len(keys) == 2 and all(k.startswith(b"opa-sidecar:deny:") for k in keys)
    assert fault_opa.count == 1


async def test_store_killed_denies_unless_told_to_use_the_local_memory(
    fault_opa: FaultOpa, key_file: Path
) -> None:
    with running_redis() as redis:
        async with (
            memory_sidecar(fault_opa, **store_settings(redis, key_file)) as strict,
            memory_sidecar(
                fault_opa, **store_settings(redis, key_file, deny_memory_store_failure="local")
            ) as lenient,
        ):
            assert reason(await lenient.check(ask("/admin"))) == "policy_denied"
            redis.stop()
            assert reason(await strict.check(ask("/orders"))) == "deny_memory_unavailable"
            # The local memory still holds what this sidecar saw; what it did not see is asked about.
            assert reason(await lenient.check(ask("/admin"))) == "held_after_deny"
            assert reason(await lenient.check(ask("/orders", principal=OTHER))) == "allow"
            entry = strict.decisions()[-1]
            exposition = strict.sidecar.metrics.exposition().decode()
    assert entry["reason"] == "deny_memory_unavailable" and "read failed" in entry["detail"]
    assert 'opa_sidecar_deny_memory_store_errors_total{operation="read"} 1.0' in exposition


@pytest.mark.parametrize("fault", ["paused", "slow"])
async def test_a_store_that_does_not_answer_in_time_denies_within_the_budget(
    fault_opa: FaultOpa, key_file: Path, fault: str
) -> None:
    with running_redis() as redis:
        async with memory_sidecar(fault_opa, **store_settings(redis, key_file), opa_timeout=0.15) as sidecar:
            await sidecar.check(ask("/admin"))
            if fault == "paused":
                redis.pause()
                stalled = None
            else:  # DEBUG SLEEP blocks the server as a slow command or a long fork would
                stalled = asyncio.create_task(
                    asyncio.to_thread(redis.command, "DEBUG", "SLEEP", "1.5", timeout=3)
                )
                await asyncio.sleep(0.1)
            started = time.perf_counter()
            # Agent-like load on the stalled store: retries, other actions, other callers.
            load = [
                ask(p, principal=c) for p in ("/admin", "/orders", "/public") for c in (AGENT, OTHER)
            ] * 10
            answers = await asyncio.gather(*(sidecar.check(r) for r in load))
            elapsed = time.perf_counter() - started
            if stalled is not None:
                await stalled
            redis.resume()
            assert {reason(a) for a in answers} == {"deny_memory_unavailable"}
            assert elapsed < 1.0  # each answered within its budget, not after the store woke
            await asyncio.sleep(0.1)
            # The store is back: what it remembered still holds.
            assert reason(await sidecar.check(ask("/admin"))) == "held_after_deny"
            assert reason(await sidecar.check(ask("/orders", principal=OTHER))) == "allow"


async def test_every_series_exists_at_zero_and_evictions_are_counted(fault_opa: FaultOpa) -> None:
    async with memory_sidecar(fault_opa, deny_memory_capacity=2) as sidecar:
        before = sidecar.sidecar.metrics.exposition().decode()
        for principal in (AGENT, OTHER):
            await sidecar.check(ask("/admin", principal=principal))
        # AGENT's entries went for OTHER's: AGENT is asked again, and denied again by the policy.
        assert reason(await sidecar.check(ask("/admin"))) == "policy_denied"
        after = sidecar.sidecar.metrics.exposition().decode()
    for kind in ("retry", "other_action", "credential_switch"):
        for held in ("true", "false"):
            assert f'opa_sidecar_checks_after_deny_total{{held="{held}",kind="{kind}"}} 0.0' in before
    for series in (
        "opa_sidecar_deny_memory_remembered_total 0.0",
        "opa_sidecar_deny_memory_evicted_total 0.0",
        'opa_sidecar_deny_memory_store_errors_total{operation="read"} 0.0',
        'opa_sidecar_deny_memory_store_errors_total{operation="write"} 0.0',
        'opa_sidecar_checks_total{outcome="deny",reason="credential_switch"} 0.0',
        'opa_sidecar_checks_total{outcome="deny",reason="deny_memory_unavailable"} 0.0',
    ):
        assert series in before
    assert "opa_sidecar_deny_memory_evicted_total 4.0" in after
    assert "opa_sidecar_deny_memory_remembered_total 3.0" in after


async def test_http_mode_and_the_json_api_share_the_memory(fault_opa: FaultOpa) -> None:
    header_caller = parse_pointers(["/attributes/request/http/headers/x-agent-id"])
    async with (
        memory_sidecar(fault_opa, caller_pointers=header_caller) as sidecar,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://127.0.0.1:{sidecar.sidecar.http.port}"
        headers = {"x-agent-id": "coder", "authorization": FIRST_TOKEN}
        async with session.get(base + "/ext_authz/admin", headers=headers) as first:
            assert first.status == 403
        async with session.get(base + "/ext_authz/admin", headers=headers) as retry:
            assert retry.status == 403
        document: dict[str, Any] = {
            "attributes": {"request": {"http": {"method": "GET", "path": "/admin", "headers": headers}}}
        }
        document["parsed_path"] = ["admin"]
        async with session.post(base + "/v1/check", json=document) as answer:
            verdict = await answer.json()
        entries = sidecar.decisions()
    assert [e["reason"] for e in entries] == ["policy_denied", "held_after_deny", "held_after_deny"]
    assert verdict["reason"] == "held_after_deny"
    assert {e["earlier_decision_id"] for e in entries[1:]} == {entries[0]["decision_id"]}
