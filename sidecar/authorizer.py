"""The check pipeline: CheckRequest bytes -> input document -> one OPA request -> Verdict.

Every path that is not a validated yes returns a Deny; nothing here raises
for bad input, bad answers or slow answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar.envoy.input import BadRequest, build_input, opa_request_body
from sidecar.opa.client import OpaClient, OpaFailure
from sidecar.opa.result import interpret
from sidecar.signals import PRINCIPAL_POINTER, JsonPointer, first_missing
from sidecar.verdict import Deny, DenyReason, Verdict

# Time kept back from the caller's deadline so the deny travels back to Envoy
# before Envoy gives up: a fixed part for the loop and the wire, and a share
# of what is left for scheduling delays under load.
DEADLINE_MARGIN_SECONDS = 0.01
DEADLINE_MARGIN_SHARE = 0.1


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
    ) -> None:
        self._opa = opa
        self._opa_timeout = opa_timeout
        self._max_inflight = max_inflight
        self._parse_body = parse_body
        if require_tls_peer and all(p.text != PRINCIPAL_POINTER for p in require):
            require = (*require, JsonPointer.parse(PRINCIPAL_POINTER))
        self._required = require
        self.inflight = 0

    async def check(self, request_bytes: bytes, time_remaining: float | None) -> Outcome:
        budget = check_budget(self._opa_timeout, time_remaining)
        if budget <= 0:
            return Outcome(Deny(DenyReason.DEADLINE_EXCEEDED, "no time left before the caller's deadline"))
        if self.inflight >= self._max_inflight:
            return Outcome(Deny(DenyReason.OVERLOADED, f"{self.inflight} checks already in flight"))
        self.inflight += 1
        try:
            deadline = asyncio.get_running_loop().time() + budget
            return await self._decide(request_bytes, deadline)
        finally:
            self.inflight -= 1

    async def _decide(self, request_bytes: bytes, deadline: float) -> Outcome:
        try:
            request = CheckRequest.FromString(request_bytes)
        except DecodeError:
            return Outcome(_bad_request("CheckRequest is not a valid protobuf message"))
        try:
            document = build_input(request, parse_body=self._parse_body)
        except BadRequest as exc:
            return Outcome(_bad_request(str(exc)), request)
        missing = first_missing(document, self._required)
        if missing is not None:
            return Outcome(
                Deny(DenyReason.MISSING_SIGNAL, f"required signal {missing} is missing"), request, document
            )
        if asyncio.get_running_loop().time() >= deadline:
            return Outcome(Deny(DenyReason.OPA_TIMEOUT, "budget spent before asking OPA"), request, document)
        try:
            answer = await self._opa.evaluate(opa_request_body(document), deadline)
        except OpaFailure as failure:
            return Outcome(Deny(failure.reason, failure.detail), request, document)
        return Outcome(interpret(answer), request, document)


def _bad_request(detail: str) -> Deny:
    return Deny(DenyReason.BAD_REQUEST, detail, http_status=400, body="bad request\n")
