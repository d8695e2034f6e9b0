"""What every way in (gRPC, HTTP mode, JSON API) does around a check: turn any
escape into a deny, write the decision log line, count the metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from sidecar import tracing
from sidecar.authorizer import Outcome
from sidecar.decision_log import DecisionLog
from sidecar.errors import describe
from sidecar.metrics import Metrics
from sidecar.shadow import ShadowResult
from sidecar.verdict import Deny, DenyReason, Verdict

log = logging.getLogger("sidecar.check")


def internal_error(decision_id: str, what: str, exc: BaseException) -> Outcome:
    log.error("check %s: %s: %s", decision_id, what, describe(exc))
    return Outcome(Deny(DenyReason.INTERNAL_ERROR, f"{what} ({type(exc).__name__})"))


class Recorder:
    def __init__(self, decisions: DecisionLog, metrics: Metrics) -> None:
        self._decisions = decisions
        self._metrics = metrics

    async def outcome(self, decision_id: str, pending: Awaitable[Outcome]) -> Outcome:
        self._metrics.inflight.inc()
        try:
            return await pending
        except Exception as exc:  # the last line of defence: any escape is a deny
            return internal_error(decision_id, "failed unexpectedly", exc)
        finally:
            self._metrics.inflight.dec()

    def record(self, decision_id: str, outcome: Outcome, started: float) -> Outcome:
        """Log and count the decision. Returns the outcome to answer with: a
        decision that cannot be recorded is not made, so a failed log write
        turns it into a deny."""
        latency = time.perf_counter() - started
        trace = tracing.take()
        try:
            self._decisions.record(decision_id, outcome, latency, None if trace is None else trace.log_ids())
        except Exception as exc:
            outcome = internal_error(decision_id, "decision log write failed", exc)
        if trace is not None:
            trace.finish(decision_id, outcome.verdict)
        self._metrics.observe_check(outcome.verdict, latency)
        if outcome.opa_seconds is not None:
            self._metrics.observe_opa(outcome.opa_seconds, outcome.opa_reached)
        if outcome.shadow is not None:
            enforced = outcome.verdict
            outcome.shadow.add_done_callback(lambda task: self._record_shadow(decision_id, enforced, task))
        return outcome

    def _record_shadow(self, decision_id: str, enforced: Verdict, task: asyncio.Task[ShadowResult]) -> None:
        if task.cancelled():
            return
        try:
            result = task.result()
            self._metrics.observe_shadow(enforced, result.verdict)
            self._decisions.record_shadow(decision_id, enforced, result)
        except Exception as exc:  # a shadow's record never affects anything else
            log.error("check %s: shadow result not recorded: %s", decision_id, describe(exc))
