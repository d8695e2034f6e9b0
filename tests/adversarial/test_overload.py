"""Overload at three times the measured capacity (tests.adversarial.overload): every check
answered within its deadline, the excess denied as `overloaded`, memory bounded."""

from __future__ import annotations

import json

import pytest

from tests.adversarial.overload import OverloadConfig, run, violations


@pytest.mark.timeout(120)
def test_three_times_capacity_is_answered_in_time_and_the_excess_denied() -> None:
    rep = run(OverloadConfig())
    problems = violations(rep)
    print(json.dumps(rep, indent=2))
    assert not problems, (problems, rep)
    assert rep["probe_outcomes"].get("overloaded", 0) > 0  # the probe itself met the limit
