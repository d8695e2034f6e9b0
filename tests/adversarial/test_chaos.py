"""Chaos under load (tests.adversarial.chaos): one pass of every OPA fault and of the
hostile clients in the suite, the 100,000-check run behind RUN_SLOW=1. The invariants are
chaos_report.violations."""

from __future__ import annotations

import warnings

import pytest

from tests.adversarial.chaos import ANSWER_SIDE, PROCESS_SIDE, ChaosConfig, run
from tests.adversarial.chaos_faults import ANSWER_SCHEDULE, PROCESS_SCHEDULE
from tests.adversarial.chaos_hostile import RAPID_RESET, UNREAD_ANSWERS, HostileClients
from tests.adversarial.chaos_report import HTTP_FLOOD, summary, violations

# Lower than the long run's rate: CI machines are small, and the faults, not the load,
# are under test here (overload has its own test).
CI_RATE = 120.0
LONG_CHECKS = 100_000
# Each hostile-client window: the process side's schedule stays shorter than the answer
# side's, so the attacks add no time to the run.
CI_ATTACK_SECONDS = 1.5


def _assert_held(config: ChaosConfig) -> dict[str, object]:
    rep = run(config)
    problems = violations(rep)
    print(summary(rep, problems))
    assert not problems, summary(rep, problems)
    if rep["deadline_misses"]:
        warnings.warn(
            f"deadline misses while the machine starved the sidecar: {rep['deadline_misses']}", stacklevel=2
        )
    return rep


@pytest.mark.timeout(240)
def test_every_opa_fault_under_load_denies_and_recovers() -> None:
    rep = _assert_held(ChaosConfig(rate=CI_RATE, hostile=CI_ATTACK_SECONDS))
    faults = rep["faults"]
    assert isinstance(faults, dict)
    attacks = {HTTP_FLOOD, RAPID_RESET, UNREAD_ANSWERS}
    assert set(faults[PROCESS_SIDE]) == {kind for kind, _ in PROCESS_SCHEDULE} | attacks
    assert set(faults[ANSWER_SIDE]) == {kind for kind, _ in ANSWER_SCHEDULE}
    assert rep["opa_restarts"] == 1
    hostile = rep["hostile"]
    assert isinstance(hostile, dict) and set(hostile) == attacks
    assert hostile[RAPID_RESET]["resets_sent"] > 0
    assert hostile[HTTP_FLOOD]["slow connections opened"] > 0


def test_the_grpc_attacks_are_left_out_when_the_port_is_a_unix_socket() -> None:
    on_tcp = HostileClients("s", "127.0.0.1:9191", "unix:///run/h.sock", "unix:///run/p.sock")
    on_socket = HostileClients("s", "unix:///run/a.sock", "unix:///run/h.sock", "unix:///run/p.sock")
    without_http = HostileClients("s", "127.0.0.1:9191", "", "")
    assert on_tcp.kinds() == [HTTP_FLOOD, RAPID_RESET, UNREAD_ANSWERS]
    assert on_socket.kinds() == [HTTP_FLOOD]
    assert without_http.kinds() == [RAPID_RESET, UNREAD_ANSWERS]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_one_hundred_thousand_checks_with_faults() -> None:
    rep = _assert_held(ChaosConfig(checks=LONG_CHECKS))
    assert isinstance(rep["checks"], int) and rep["checks"] >= LONG_CHECKS
