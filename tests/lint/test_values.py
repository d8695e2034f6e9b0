"""Reading durations, status codes, fractions and header patterns; the timeout
the sidecar needs."""

from __future__ import annotations

import pytest

from sidecar.authorizer import check_budget
from sidecar.lint.timeouts import Budget
from sidecar.lint.values import (
    NameMatcher,
    is_false,
    is_success_status,
    is_true,
    istio_matcher,
    parse_duration,
    runtime_fraction,
    status_code,
)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("0.25s", 0.25),
        ("1s", 1.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("0", 0.0),
        ("600s", 600.0),
        ({"seconds": 1, "nanos": 500_000_000}, 1.5),
        ({"nanos": 50_000_000}, 0.05),
        ({"seconds": "2"}, 2.0),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "0.25", "quarter", "1s2", "s", 0.25, None, True, {"seconds": "x"}])
def test_not_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "code"),
    [(200, 200), ("204", 204), ("OK", 200), ("ok", 200), ("noContent", 204), ("ServiceUnavailable", None)],
)
def test_status_codes(raw: object, code: int | None) -> None:
    assert status_code(raw) == code


def test_success_status_is_2xx_only() -> None:
    assert [c for c in (199, 200, 299, 300, 503, None) if is_success_status(c)] == [200, 299]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"default_value": {"numerator": 50}}, (0.5, None)),
        ({"default_value": {"numerator": 5000, "denominator": "TEN_THOUSAND"}}, (0.5, None)),
        ({"default_value": {"numerator": 2_000_000, "denominator": "MILLION"}}, (1.0, None)),
        ({"default_value": {}, "runtime_key": "k"}, (0.0, "k")),  # protobuf reads a missing numerator as 0
    ],
)
def test_runtime_fractions(config: object, expected: tuple[float, str | None]) -> None:
    assert runtime_fraction(config) == expected


def test_truthiness_follows_envoy() -> None:
    """Envoy 1.40 read each of the first as true and each of the rest as false or
    refused it (tests/lint/test_spellings.py checks the spellings live)."""
    true = (True, "true", "TRUE", "tRue", "t", "T", "yes", "yEs", "y", "Y", "1", {"value": True})
    other = (False, " true ", "on", "+1", "01", 1, None, "false", "no", "n", "0", "off")
    assert all(is_true(v) for v in true)
    assert not any(is_true(v) for v in other)
    assert is_false("No") and is_false(False) and is_false("0") and not is_false(None)


def test_istio_patterns_and_coverage() -> None:
    assert istio_matcher("*").matches_anything
    assert istio_matcher("x-*") == NameMatcher("prefix", "x-")
    assert istio_matcher("*-user") == NameMatcher("suffix", "-user")
    assert not istio_matcher("x-user").matches_anything
    assert NameMatcher("prefix", "x-").covers(NameMatcher("exact", "X-User"))
    assert NameMatcher("prefix", "x-").covers(NameMatcher("prefix", "x-auth-"))
    assert not NameMatcher("prefix", "x-auth-").covers(NameMatcher("prefix", "x-"))
    assert not NameMatcher("exact", "x-user").covers(NameMatcher("prefix", "x-"))
    assert NameMatcher("regex", "x-(user|tenant)").covers(NameMatcher("exact", "x-tenant"))


@pytest.mark.parametrize("budget", [0.01, 0.15, 0.3, 2.0])
def test_the_minimum_proxy_timeout_is_where_the_sidecar_keeps_its_whole_budget(budget: float) -> None:
    needed = Budget(budget).min_proxy_timeout
    assert check_budget(budget, needed) == pytest.approx(budget)
    assert check_budget(budget, needed - 0.001) < budget
    short = needed - 0.001
    assert Budget(budget).opa_time_within(short) == pytest.approx(check_budget(budget, short))


def test_the_default_budget_needs_178_ms_and_gets_a_round_suggestion() -> None:
    assert Budget(0.15).min_proxy_timeout == pytest.approx(0.1778, abs=1e-4)
    assert Budget(0.15).recommended == "0.25s"
    assert Budget(0.3).recommended == "0.4s"
