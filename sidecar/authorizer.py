"""The check pipeline: CheckRequest bytes -> input document -> one OPA request -> Verdict.

Every path that is not a validated yes returns a Deny; nothing here raises
for bad input, bad answers or slow answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar.deny_memory import DenyMemory, Recall
from sidecar.deny_table import Subject
from sidecar.envoy.grpc_body import GrpcMethods
from sidecar.envoy.input import DEFAULT_ENVOY_BODY_LIMIT, BadRequest, build_input, opa_request_body
from sidecar.opa.client import OpaClient, OpaFailure
from sidecar.opa.result import interpret
from sidecar.shadow import Shadow, ShadowResult
from sidecar.signals import PRINCIPAL_POINTER, JsonPointer, missing_signal
from sidecar.verdict import Deny, DenyReason, Verdict

# Time kept back from the caller's deadline so the deny travels back to Envoy
# before Envoy gives up: a fixed part for the loop and the wire, and a share
# of what is left for scheduling delays under load.
DEADLINE_MARGIN_SECONDS = 0.01
DEADLINE_MARGIN_SHARE = 0.1


# Why a way in cannot meet a required signal only Envoy can attest (the
# connection's peer, certificate, TLS session, destination, filter metadata).
UNATTESTED_IN_HTTP_MODE = "in ext_authz HTTP mode Envoy forwards headers, not its view of the connection"
UNATTESTED_IN_JSON_API = "the JSON check API's caller writes the whole input document"

# Failures that still mean OPA itself answered over HTTP.
_ANSWERED = frozenset({DenyReason.OPA_HTTP_STATUS, DenyReason.OPA_BAD_RESPONSE})


def check_budget(opa_timeout: float, time_remaining: float | None) -> float:
    """Seconds this check may spend: the configured timeout, shortened by the
    caller's deadline minus a margin. Zero or less means no time at all."""
    if time_remaining is None:
        return opa_timeout
    margin = DEADLINE_MARGIN_SECONDS + DEADLINE_MARGIN_SHARE * max(time_remaining, 0.0)
    return min(opa_timeout, time_remaining - margin)


@dataclass(slots=True)
class Outcome:
    """What a check decided, and what it saw (for the decision log)."""

    verdict: Verdict
    request: CheckRequest | None = None
    input: dict[str, Any] | None = None
    opa_seconds: float | None = None  # set when OPA was asked
    opa_reached: bool = False  # OPA answered with some HTTP response
    shadow: asyncio.Task[ShadowResult] | None = None  # the candidate policy's answer, if asked
    after_deny: Recall | None = None  # what the deny memory said about the check
    subject: Subject | None = None  # the caller as the deny memory knows it


class Authorizer:
    def __init__(
        self,
        opa: OpaClient,
        *,
        opa_timeout: float,
        max_inflight: int,
        parse_body: bool = True,
        require: tuple[JsonPointer, ...] = (),
        require_tls_peer: bool = False,
        shadow: Shadow | None = None,
        max_request_bytes: int = 4 << 20,
        envoy_body_limit: int = DEFAULT_ENVOY_BODY_LIMIT,
        deny_memory: DenyMemory | None = None,
        grpc_methods: GrpcMethods | None = None,
    ) -> None:
        self._memory = deny_memory
        self._grpc_methods = grpc_methods
        self._max_request_bytes = max_request_bytes
        self._envoy_body_limit = envoy_body_limit
        self._opa = opa
        self._shadow = shadow
        self._opa_timeout = opa_timeout
        self._max_inflight = max_inflight
        self._parse_body = parse_body
        if require_tls_peer and all(p.text != PRINCIPAL_POINTER for p in require):
            require = (*require, JsonPointer.parse(PRINCIPAL_POINTER))
        self._required = require
        self.inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._aborting = False

    async def check(
        self, request_bytes: bytes, time_remaining: float | None, decision_id: str = ""
    ) -> Outcome:
        """A serialized CheckRequest (gRPC mode)."""
        return await self._guarded(time_remaining, decision_id, self._decide_bytes, request_bytes)

    async def check_request(
        self, request: CheckRequest, time_remaining: float | None, decision_id: str = ""
    ) -> Outcome:
        """A CheckRequest built from what Envoy forwarded (HTTP mode): headers,
        which carry none of Envoy's view of the connection."""
        return await self._guarded(time_remaining, decision_id, self._decide_forwarded, request)

    async def check_document(
        self, document: dict[str, Any], time_remaining: float | None, decision_id: str = ""
    ) -> Outcome:
        """An input document given as is (the JSON check API)."""
        return await self._guarded(time_remaining, decision_id, self._decide_document, document)

    def abort_all(self) -> None:
        """Deny every check still waiting (shutdown grace ran out): each gets
        an answer instead of being dropped with its connection."""
        self._aborting = True
        for task in list(self._tasks):
            task.cancel()

    async def _guarded(
        self,
        time_remaining: float | None,
        decision_id: str,
        decide: Callable[..., Awaitable[Outcome]],
        *args: Any,
    ) -> Outcome:
        """Budget, overload and shutdown rules shared by every way in."""
        if self._aborting:
            return Outcome(Deny(DenyReason.SHUTTING_DOWN, "shutdown grace has run out"))
        budget = check_budget(self._opa_timeout, time_remaining)
        if budget <= 0:
            return Outcome(Deny(DenyReason.DEADLINE_EXCEEDED, "no time left before the caller's deadline"))
        if self.inflight >= self._max_inflight:
            return Outcome(Deny(DenyReason.OVERLOADED, f"{self.inflight} checks already in flight"))
        task = asyncio.current_task()
        self.inflight += 1
        if task is not None:
            self._tasks.add(task)
        try:
            deadline = asyncio.get_running_loop().time() + budget
            outcome: Outcome = await decide(*args, deadline)
            if self._memory is not None and outcome.subject is not None:
                await self._memory.remember(outcome.subject, outcome.verdict, decision_id, deadline)
            return outcome
        except asyncio.CancelledError:
            if not self._aborting or task is None:
                raise  # the caller went away: there is nobody to answer
            task.uncancel()
            return Outcome(Deny(DenyReason.SHUTTING_DOWN, "shutdown grace ran out before OPA answered"))
        finally:
            self.inflight -= 1
            if task is not None:
                self._tasks.discard(task)

    async def _decide_bytes(self, request_bytes: bytes, deadline: float) -> Outcome:
        if len(request_bytes) > self._max_request_bytes:
            # Refused before parsing: a huge body would hold the event loop.
            detail = (
                f"CheckRequest of {len(request_bytes)} bytes is over the {self._max_request_bytes} byte limit"
            )
            return Outcome(Deny(DenyReason.BAD_REQUEST, detail, http_status=413, body="request too large\n"))
        try:
            request = CheckRequest.FromString(request_bytes)
        except DecodeError:
            return Outcome(_bad_request("CheckRequest is not a valid protobuf message"))
        return await self._decide_request(request, deadline)

    async def _decide_forwarded(self, request: CheckRequest, deadline: float) -> Outcome:
        return await self._decide_request(request, deadline, unattested=UNATTESTED_IN_HTTP_MODE)

    async def _decide_request(
        self, request: CheckRequest, deadline: float, unattested: str | None = None
    ) -> Outcome:
        try:
            document = build_input(
                request,
                parse_body=self._parse_body,
                envoy_body_limit=self._envoy_body_limit,
                grpc_methods=self._grpc_methods,
            )
        except BadRequest as exc:
            return Outcome(_bad_request(str(exc), exc.http_status), request)
        return await self._consult(document, request, deadline, unattested)

    async def _decide_document(self, document: dict[str, Any], deadline: float) -> Outcome:
        return await self._consult(document, None, deadline, UNATTESTED_IN_JSON_API)

    async def _consult(
        self,
        document: dict[str, Any],
        request: CheckRequest | None,
        deadline: float,
        unattested: str | None = None,
    ) -> Outcome:
        """The deny memory's hook: a caller it holds is denied without asking OPA."""
        if self._memory is None:
            return await self._ask(document, request, deadline, unattested)
        subject = self._memory.subject(document, attested=unattested is None)
        recall = await self._memory.recall(subject, deadline) if subject is not None else None
        if recall is not None and recall.deny is not None:
            return Outcome(recall.deny, request, document, after_deny=recall)
        outcome = await self._ask(document, request, deadline, unattested)
        outcome.after_deny, outcome.subject = recall, subject
        return outcome

    async def _ask(
        self,
        document: dict[str, Any],
        request: CheckRequest | None,
        deadline: float,
        unattested: str | None = None,
    ) -> Outcome:
        missing = missing_signal(document, self._required, unattested=unattested)
        if missing is not None:
            return Outcome(Deny(DenyReason.MISSING_SIGNAL, missing), request, document)
        if asyncio.get_running_loop().time() >= deadline:
            return Outcome(Deny(DenyReason.OPA_TIMEOUT, "budget spent before asking OPA"), request, document)
        try:
            body = opa_request_body(document)
        except (TypeError, ValueError):
            return Outcome(_bad_request("input document cannot be encoded as JSON"), request, document)
        started = time.perf_counter()
        try:
            answer = await self._opa.evaluate(body, deadline)
        except OpaFailure as failure:
            seconds = time.perf_counter() - started
            reached = failure.reason in _ANSWERED
            verdict: Verdict = Deny(failure.reason, failure.detail)
            return Outcome(verdict, request, document, seconds, reached, self._start_shadow(body))
        seconds = time.perf_counter() - started
        verdict = interpret(answer)
        return Outcome(verdict, request, document, seconds, True, self._start_shadow(body))

    def _start_shadow(self, body: bytes) -> asyncio.Task[ShadowResult] | None:
        # Only once the enforced answer is in: the candidate never competes with it.
        return self._shadow.start(body) if self._shadow is not None else None


def _bad_request(detail: str, http_status: int = 400) -> Deny:
    body = "request too large\n" if http_status == 413 else "bad request\n"
    return Deny(DenyReason.BAD_REQUEST, detail, http_status=http_status, body=body)
