"""Deny memory: its rules, its bounds, and that it can only add a deny."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.authorizer import Authorizer, Outcome
from sidecar.cli import build_parser
from sidecar.config import ConfigError, settings_from
from sidecar.deny_memory import DenyMemory, Mode, SubjectReader
from sidecar.deny_memory_options import DEFAULT_REASONS, parse_reasons
from sidecar.deny_store import StoreUnavailable, _decode
from sidecar.deny_table import LocalDenyTable
from sidecar.metrics import Metrics
from sidecar.opa.client import OpaClient
from sidecar.signals import parse_pointers
from sidecar.verdict import Allow, Deny

WINDOW = 10.0


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ScriptedOpa:
    """Answers each input's own "allow" field; counts what it was asked."""

    asked: list[dict[str, Any]] = field(default_factory=list)

    async def evaluate(self, body: bytes, deadline: float) -> dict[str, Any]:
        document = orjson.loads(body)["input"]
        self.asked.append(document)
        return {"result": bool(document["allow"])}


def memory(
    mode: Mode,
    clock: Clock,
    *,
    capacity: int = 1000,
    reasons: str = DEFAULT_REASONS,
    metrics: Metrics | None = None,
    callers: tuple[str, ...] = ("/caller",),
) -> DenyMemory:
    reader = SubjectReader(
        b"k" * 32, parse_pointers(callers), parse_pointers(["/action"]), parse_pointers(["/cred"])
    )
    return DenyMemory(
        window=WINDOW,
        mode=mode,
        reasons=parse_reasons(reasons.split(",")),
        reader=reader,
        local=LocalDenyTable(capacity, clock),
        metrics=metrics or Metrics(),
        clock=clock,
    )


def authorizer(deny_memory: DenyMemory, opa: ScriptedOpa) -> Authorizer:
    return Authorizer(cast(OpaClient, opa), opa_timeout=1.0, max_inflight=10, deny_memory=deny_memory)


def doc(caller: str | None, action: str, cred: str, allow: bool) -> dict[str, Any]:
    document: dict[str, Any] = {"action": action, "cred": cred, "allow": allow}
    if caller is not None:
        document["caller"] = caller
    return document


async def run(auth: Authorizer, document: dict[str, Any], decision_id: str = "") -> Outcome:
    return await auth.check_document(document, None, decision_id)


def reason(outcome: Outcome) -> str:
    return "allow" if isinstance(outcome.verdict, Allow) else outcome.verdict.reason.value


async def test_hold_denies_the_retry_and_the_credential_switch_and_asks_about_other_actions() -> None:
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(Mode.HOLD, clock), opa)
    assert reason(await run(auth, doc("agent", "/a", "k1", False), "first")) == "policy_denied"
    clock.now += 1.5
    retry = await run(auth, doc("agent", "/a", "k1", True))
    assert reason(retry) == "held_after_deny"
    assert retry.after_deny is not None
    assert (retry.after_deny.kind, retry.after_deny.earlier_decision_id) == ("retry", "first")
    assert retry.after_deny.seconds_since_deny == pytest.approx(1.5)
    assert "first" in cast(Deny, retry.verdict).detail
    other = await run(auth, doc("agent", "/b", "k1", True))
    assert reason(other) == "allow"
    assert other.after_deny is not None and other.after_deny.kind == "other_action"
    for action in ("/a", "/b", "/c"):
        switched = await run(auth, doc("agent", action, "k2", True))
        assert reason(switched) == "credential_switch"
    assert reason(await run(auth, doc("someone-else", "/a", "k1", True))) == "allow"
    # OPA was asked for the first deny, the other action and the other caller only.
    assert [d["action"] for d in opa.asked] == ["/a", "/b", "/a"]


async def test_the_window_ends_and_the_caller_is_asked_again() -> None:
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(Mode.HOLD, clock), opa)
    await run(auth, doc("agent", "/a", "k1", False))
    clock.now += WINDOW - 0.01
    assert reason(await run(auth, doc("agent", "/a", "k1", True))) == "held_after_deny"
    clock.now += 0.01
    allowed = await run(auth, doc("agent", "/a", "k1", True))
    assert (reason(allowed), allowed.after_deny) == ("allow", None)


async def test_a_held_deny_does_not_renew_the_window() -> None:
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(Mode.HOLD, clock), opa)
    await run(auth, doc("agent", "/a", "k1", False))
    for _ in range(9):
        clock.now += 1.0
        assert reason(await run(auth, doc("agent", "/a", "k1", True))) == "held_after_deny"
    clock.now += 1.0
    assert reason(await run(auth, doc("agent", "/a", "k1", True))) == "allow"


async def test_freeze_denies_every_check_of_the_caller() -> None:
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(Mode.FREEZE, clock), opa)
    await run(auth, doc("agent", "/a", "k1", False), "first")
    frozen = await run(auth, doc("agent", "/b", "k1", True))
    assert reason(frozen) == "held_after_deny"
    assert frozen.after_deny is not None and frozen.after_deny.kind == "other_action"
    assert reason(await run(auth, doc("agent", "/b", "k2", True))) == "credential_switch"
    assert len(opa.asked) == 1


async def test_observe_changes_no_verdict_but_marks_and_counts() -> None:
    clock, opa, metrics = Clock(), ScriptedOpa(), Metrics()
    auth = authorizer(memory(Mode.OBSERVE, clock, metrics=metrics), opa)
    await run(auth, doc("agent", "/a", "k1", False), "first")
    kinds = []
    for document in (
        doc("agent", "/a", "k1", True),
        doc("agent", "/b", "k1", True),
        doc("agent", "/a", "k2", True),
    ):
        outcome = await run(auth, document)
        assert reason(outcome) == "allow"
        assert outcome.after_deny is not None
        kinds.append(outcome.after_deny.kind)
    assert kinds == ["retry", "other_action", "credential_switch"]
    assert len(opa.asked) == 4
    exposition = metrics.exposition().decode()
    for kind in kinds:
        assert f'opa_sidecar_checks_after_deny_total{{held="false",kind="{kind}"}} 1.0' in exposition
    assert "opa_sidecar_deny_memory_remembered_total 1.0" in exposition


async def test_a_caller_that_cannot_be_told_is_not_remembered() -> None:
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(Mode.FREEZE, clock), opa)
    for caller in (None, "", " , "):
        await run(auth, doc(caller, "/a", "k1", False))
        assert reason(await run(auth, doc(caller, "/a", "k1", True))) == "allow"


async def test_only_the_configured_reasons_are_remembered() -> None:
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(Mode.HOLD, clock, reasons="undefined"), opa)
    await run(auth, doc("agent", "/a", "k1", False))  # policy_denied: not in the list
    assert reason(await run(auth, doc("agent", "/a", "k1", True))) == "allow"


async def test_json_api_documents_cannot_name_an_envoy_attested_caller() -> None:
    # The JSON check API's caller writes the document: it could name any workload.
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(Mode.FREEZE, clock, callers=("/attributes/source/principal",)), opa)
    victim = doc(None, "/a", "k1", False) | {"attributes": {"source": {"principal": "spiffe://x/victim"}}}
    await run(auth, victim)
    victim["allow"] = True
    assert reason(await run(auth, victim)) == "allow"


def test_a_full_table_forgets_the_oldest_and_counts_it() -> None:
    clock = Clock()
    table = LocalDenyTable(4, clock)
    reader = SubjectReader(b"k" * 32, parse_pointers(["/c"]), parse_pointers(["/a"]), parse_pointers(["/k"]))
    subjects = [reader.read({"c": str(i), "a": "x", "k": "t"}, attested=True) for i in range(3)]
    for i, subject in enumerate(subjects):
        assert subject is not None
        table.remember(subject, f"d{i}", WINDOW)
    assert len(table) == 4 and table.evicted == 2
    assert table.recall(cast(Any, subjects[0])).caller is None
    assert cast(Any, table.recall(cast(Any, subjects[2])).caller).decision_id == "d2"


def test_hashes_are_keyed_and_never_hold_the_credential() -> None:
    pointers = parse_pointers(["/c"]), parse_pointers(["/a"]), parse_pointers(["/k"])
    document = {"c": "agent", "a": "x", "k": "Bearer secret-token"}
    one = SubjectReader(b"1" * 32, *pointers).read(document, attested=True)
    two = SubjectReader(b"2" * 32, *pointers).read(document, attested=True)
    assert one is not None and two is not None
    assert one.caller != two.caller and one.credential != two.credential
    assert b"secret" not in one.credential + one.caller + one.action


@pytest.mark.parametrize(
    "value", [b"", b"x", b"id|nan|00", b"id|1.0|zz", b"\xff|1|00", b"|1.0|00", b"id|1.0|00|more"]
)
def test_a_stored_value_the_sidecar_did_not_write_is_unavailable(value: bytes) -> None:
    with pytest.raises(StoreUnavailable):
        _decode(value, with_credential=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--deny-memory", "30", "--deny-memory-store", "redis://127.0.0.1:6379/0"],
            "--deny-memory-key-file",
        ),
        (["--deny-memory", "30", "--workers", "2"], "--deny-memory-store"),
        (["--deny-memory-reasons", "held_after_deny"], "--deny-memory-reasons"),
        (["--deny-memory-reasons", "overloaded"], "--deny-memory-reasons"),
        (["--deny-memory", "-1"], "--deny-memory"),
        (["--deny-memory-mode", "lockout"], "--deny-memory-mode"),
        (["--deny-memory-store", "http://127.0.0.1:6379"], "--deny-memory-store"),
        (["--caller", "attributes/source"], "--caller"),
    ],
)
def test_settings_that_stop_the_start(args: list[str], message: str) -> None:
    parsed = build_parser().parse_args(["serve", "--opa-url", "http://o:1", *args])
    with pytest.raises(ConfigError, match=message):
        settings_from(parsed, {})


def test_a_store_url_is_never_echoed(tmp_path: Any) -> None:
    parsed = build_parser().parse_args(
        ["serve", "--opa-url", "http://o:1", "--deny-memory-store", "ftp://user:hunter2@h"]
    )
    with pytest.raises(ConfigError) as caught:
        settings_from(parsed, {})
    assert "hunter2" not in str(caught.value)


# -- the invariant: the memory can only turn an allow into a deny

check_strategy = st.tuples(
    st.sampled_from(["a1", "a2", None]),  # caller
    st.sampled_from(["/x", "/y"]),  # action
    st.sampled_from(["k1", "k2"]),  # credential
    st.booleans(),  # the policy allows
    st.floats(min_value=0, max_value=6),  # seconds since the previous check
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(list(Mode)),
    capacity=st.integers(min_value=2, max_value=12),
    checks=st.lists(check_strategy, min_size=1, max_size=25),
)
def test_the_memory_never_turns_a_deny_into_an_allow(
    mode: Mode, capacity: int, checks: list[tuple[str | None, str, str, bool, float]]
) -> None:
    clock, opa = Clock(), ScriptedOpa()
    auth = authorizer(memory(mode, clock, capacity=capacity), opa)
    remembered: list[tuple[str, str, float]] = []  # (caller, action, when) of each deny the policy made
    roomy = capacity >= 2 * len(checks)  # nothing can be evicted
    for caller, action, cred, allow, wait in checks:
        clock.now += wait
        asked = len(opa.asked)
        outcome = asyncio.run(run(auth, doc(caller, action, cred, allow)))
        policy_asked = len(opa.asked) > asked
        if isinstance(outcome.verdict, Allow):
            # An allow is the policy's, for this very check: a full, evicted or
            # empty memory only ever sends the check to the policy.
            assert policy_asked and allow
        if mode is Mode.OBSERVE:
            assert policy_asked and isinstance(outcome.verdict, Allow) == allow
        elif roomy and caller is not None:
            held = any(c == caller and a == action and clock.now - t < WINDOW for c, a, t in remembered)
            if held:  # a remembered deny of this action binds within its window
                assert isinstance(outcome.verdict, Deny) and not policy_asked
        if policy_asked and not allow and caller is not None:
            remembered.append((caller, action, clock.now))
