"""Shadow evaluation of a candidate policy (--shadow-decision-path).

The safe replacement for a dry-run mode: the enforced decision is made and
sent exactly as without a shadow; the candidate is asked after it, with its
own budget, and its answer is only compared, counted and logged. Nothing the
shadow does can reach the enforced verdict: the check never awaits it, and
every error inside it is contained.

Nor can it delay enforced checks. It is asked only once the enforced answer is
in, on connections of its own; its answer may be at most MAX_ANSWER_BYTES
(a decision needs far less, and a larger one counts as a bad answer), so the
part parsed on the event loop stays short; interpreting it runs in a thread.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sidecar.opa.client import OpaClient, OpaFailure
from sidecar.opa.result import interpret
from sidecar.verdict import Deny, DenyReason, Verdict

# A candidate's answer larger than this is not parsed (opa_bad_response):
# parsing even 64 KiB of awkward JSON takes the loop a few milliseconds.
MAX_ANSWER_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class ShadowResult:
    verdict: Verdict
    seconds: float


class Shadow:
    def __init__(self, client: OpaClient, decision_path: str, timeout: float, max_inflight: int) -> None:
        self.client = client
        self.decision_path = decision_path
        self._timeout = timeout
        self._max_inflight = max_inflight
        self.inflight = 0
        self.skipped = 0
        self._tasks: set[asyncio.Task[ShadowResult]] = set()

    def start(self, body: bytes) -> asyncio.Task[ShadowResult] | None:
        """Ask the candidate path with the same request body, in the
        background; None when too many shadow requests are already out."""
        if self.inflight >= self._max_inflight:
            self.skipped += 1
            return None
        task = asyncio.get_running_loop().create_task(self._run(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, body: bytes) -> ShadowResult:
        self.inflight += 1
        started = time.perf_counter()
        try:
            deadline = asyncio.get_running_loop().time() + self._timeout
            try:
                answer = await self.client.evaluate(body, deadline)
                verdict = await asyncio.to_thread(interpret, answer)
            except OpaFailure as failure:
                verdict = Deny(failure.reason, failure.detail)
            except Exception as exc:  # contained: a shadow never fails a check
                verdict = Deny(DenyReason.INTERNAL_ERROR, type(exc).__name__)
            return ShadowResult(verdict, time.perf_counter() - started)
        finally:
            self.inflight -= 1

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.client.close()
