"""Answers to requests an HTTP listener refuses before any handler sees them
(headers too long or too many, bad framing, a body over the limit, a client
too slow).

On the authorization listener such a refusal is a decision like any other: a
deny with a decision id in ``x-opa-sidecar-decision-id``, a decision-log line
and a count in the metrics, because Envoy in HTTP mode enforces whatever status
it gets and a fail-open Envoy would let an error or a dropped connection
through. The status is always 4xx. Nothing of the request is quoted: the
detail names the limit, never the data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from aiohttp import web

from sidecar.authorizer import Outcome
from sidecar.decision_id import new_decision_id
from sidecar.http_authz import DECISION_HEADER
from sidecar.recording import Recorder
from sidecar.verdict import Deny, DenyReason

BAD_REQUEST = 400
TIMEOUT = 408
TOO_LARGE = 413
HEADERS_TOO_LARGE = 431


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    headers: tuple[tuple[str, str], ...] = ()

    def raw(self) -> bytes:
        """The whole HTTP/1.1 response, for a request no handler will answer."""
        reason = HTTPStatus(self.status).phrase
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += ["content-length: 0", "connection: close", "", ""]
        return "\r\n".join(lines).encode("ascii")

    def response(self) -> web.Response:
        response = web.Response(status=self.status, headers=dict(self.headers))
        response.force_close()
        return response


class Refuser(Protocol):
    def refuse(self, status: int, detail: str) -> Refusal:
        """The client sent what the listener does not take (a 4xx)."""

    def fail(self, detail: str) -> Refusal:
        """The listener failed to answer a request it took."""

    def overloaded(self, detail: str) -> Refusal:
        """The listener took the request beyond its connection cap."""


class PlainRefuser:
    """The probe listener: a bare status; probes are not checks."""

    def refuse(self, status: int, detail: str) -> Refusal:
        return Refusal(status)

    def fail(self, detail: str) -> Refusal:
        return Refusal(500)

    def overloaded(self, detail: str) -> Refusal:
        return Refusal(503)


class DecisionRefuser:
    """The authorization listener: every refusal is a recorded deny."""

    def __init__(self, recorder: Recorder, failure_status: int) -> None:
        self._recorder = recorder
        self._failure_status = failure_status  # never 5xx: a fail-open Envoy passes those

    def refuse(self, status: int, detail: str) -> Refusal:
        return self._deny(DenyReason.BAD_REQUEST, detail, status)

    def fail(self, detail: str) -> Refusal:
        return self._deny(DenyReason.INTERNAL_ERROR, detail, self._failure_status)

    def overloaded(self, detail: str) -> Refusal:
        return self._deny(DenyReason.OVERLOADED, detail, self._failure_status)

    def _deny(self, reason: DenyReason, detail: str, status: int) -> Refusal:
        started = time.perf_counter()
        decision_id = new_decision_id()
        # A refusal whose log line cannot be written is still a refusal.
        self._recorder.record(decision_id, Outcome(Deny(reason, detail, http_status=status)), started)
        return Refusal(status, ((DECISION_HEADER, decision_id),))
