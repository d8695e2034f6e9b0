"""The gRPC face: /envoy.service.auth.v3.Authorization/Check.

Requests arrive as raw bytes and are parsed inside the handler, so even a
message that does not decode gets a deny CheckResponse rather than a gRPC
error (which Envoy's failure_mode_allow would turn into an allow).
"""

from __future__ import annotations

import logging
import time
import uuid

import grpc

from sidecar.authorizer import Authorizer, Outcome
from sidecar.decision_log import DecisionLog
from sidecar.envoy.response import build_response, minimal_deny
from sidecar.errors import describe
from sidecar.metrics import Metrics
from sidecar.verdict import Deny, DenyReason

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
log = logging.getLogger(__name__)


class CheckService:
    def __init__(self, authorizer: Authorizer, decisions: DecisionLog, metrics: Metrics) -> None:
        self._authorizer = authorizer
        self._decisions = decisions
        self._metrics = metrics

    async def check(self, request_bytes: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        decision_id = str(uuid.uuid4())
        try:
            outcome = await self._authorizer.check(request_bytes, context.time_remaining())
        except Exception as exc:  # the last line of defence: any escape is a deny
            log.error("check %s failed unexpectedly: %s", decision_id, describe(exc))
            outcome = Outcome(Deny(DenyReason.INTERNAL_ERROR, f"unexpected {type(exc).__name__}"))
        try:
            response = build_response(outcome.verdict, decision_id).SerializeToString()
        except Exception as exc:
            log.error("check %s: response could not be built: %s", decision_id, describe(exc))
            outcome = Outcome(Deny(DenyReason.INTERNAL_ERROR, f"response not built ({type(exc).__name__})"))
            response = minimal_deny(decision_id, DenyReason.INTERNAL_ERROR.value).SerializeToString()
        latency = time.perf_counter() - started
        try:
            self._decisions.record(decision_id, outcome, latency)
        except Exception as exc:
            # A decision that cannot be recorded is not made: deny.
            log.error("check %s: decision log write failed: %s", decision_id, describe(exc))
            outcome = Outcome(Deny(DenyReason.INTERNAL_ERROR, "decision log write failed"))
            response = minimal_deny(decision_id, DenyReason.INTERNAL_ERROR.value).SerializeToString()
        self._metrics.observe_check(outcome.verdict, latency)
        if outcome.opa_seconds is not None:
            self._metrics.observe_opa(outcome.opa_seconds, outcome.opa_reached)
        return response

    def handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        # No deserializer: the handler receives bytes and parses them itself.
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(self.check)}
        )
