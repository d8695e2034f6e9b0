"""How long a proxy must wait for the sidecar, and the timeout checks shared by
the Envoy, Istio and Envoy Gateway linters.

The sidecar gives a check the smaller of its budget (``--opa-timeout``) and
the caller's deadline minus a margin (``sidecar.authorizer.check_budget``), so
a proxy timeout below ``(budget + fixed margin) / (1 - margin share)`` cuts the
time OPA gets, and more slow answers become denials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sidecar.authorizer import DEADLINE_MARGIN_SECONDS, DEADLINE_MARGIN_SHARE
from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, parse_duration

ENVOY_DEFAULT_GRPC_TIMEOUT = 0.2  # seconds; proto comment, observed on Envoy 1.40


@dataclass(frozen=True, slots=True)
class Budget:
    """The sidecar's per-check budget in seconds (its ``--opa-timeout``)."""

    seconds: float

    @property
    def min_proxy_timeout(self) -> float:
        return (self.seconds + DEADLINE_MARGIN_SECONDS) / (1.0 - DEADLINE_MARGIN_SHARE)

    @property
    def recommended_seconds(self) -> float:
        """A round timeout with some room above the minimum."""
        return math.ceil((self.min_proxy_timeout + 0.05) * 20) / 20

    @property
    def recommended(self) -> str:
        """As a protobuf Duration ("0.25s")."""
        return f"{self.recommended_seconds:g}s"

    def opa_time_within(self, proxy_timeout: float) -> float:
        margin = DEADLINE_MARGIN_SECONDS + DEADLINE_MARGIN_SHARE * max(proxy_timeout, 0.0)
        return min(self.seconds, proxy_timeout - margin)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def check_timeout(
    raw: Json, path: Pointer, budget: Budget, *, field: str, proxy: str, suggestion: str | None = None
) -> list[Issue]:
    """Findings for an explicit timeout value ``raw`` found at ``path``;
    ``suggestion`` is a good value in the syntax of that field."""
    suggestion = suggestion or budget.recommended
    try:
        seconds = parse_duration(raw)
    except ValueError:
        return [
            rules.INVALID_TIMEOUT.issue(
                path,
                f"{field} {raw!r} is not a duration; {proxy} rejects the config or reads another value",
                f'write it as a duration with a unit, e.g. {field}: "{suggestion}"',
            )
        ]
    if seconds >= budget.min_proxy_timeout:
        return []
    return [
        below_budget(path, budget, seconds, field=field, proxy=proxy, explicit=True, suggestion=suggestion)
    ]


def below_budget(
    path: Pointer,
    budget: Budget,
    seconds: float,
    *,
    field: str,
    proxy: str,
    explicit: bool,
    suggestion: str | None = None,
) -> Issue:
    opa_time = budget.opa_time_within(seconds)
    waits = f"{proxy} waits {ms(seconds)}" + ("" if explicit else " (its default, no timeout is set)")
    if opa_time <= 0:
        effect = "which leaves the sidecar no time to ask OPA: every check is denied (deadline_exceeded)"
    else:
        effect = (
            f"so the sidecar gives OPA {ms(opa_time)} instead of its {ms(budget.seconds)} budget and denies "
            "slower answers; with fail-open a late answer would be let through"
        )
    return rules.TIMEOUT_BELOW_BUDGET.issue(
        path,
        f"{waits} for the sidecar, less than the {ms(budget.min_proxy_timeout)} it needs to use its "
        f"{ms(budget.seconds)} budget and still answer in time, {effect}",
        f"set {field} to at least {ms(budget.min_proxy_timeout)}, e.g. {suggestion or budget.recommended} "
        "(or lower the sidecar's --opa-timeout and pass it as --sidecar-budget)",
    )
