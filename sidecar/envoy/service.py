"""The gRPC face: /envoy.service.auth.v3.Authorization/Check.

Requests arrive as raw bytes and are parsed inside the handler, so even a
message that does not decode gets a deny CheckResponse rather than a gRPC
error (which Envoy's failure_mode_allow would turn into an allow).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc

from sidecar.authorizer import Authorizer, Outcome
from sidecar.envoy.response import build_response, minimal_deny
from sidecar.recording import Recorder, internal_error
from sidecar.verdict import Deny, DenyReason

SERVICE_NAME = "envoy.service.auth.v3.Authorization"


class CheckService:
    def __init__(self, authorizer: Authorizer, recorder: Recorder) -> None:
        self._authorizer = authorizer
        self._recorder = recorder
        self.received = 0  # checks that reached this handler: the drain waits until it stops growing

    async def check(self, request_bytes: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        self.received += 1
        decision_id = str(uuid.uuid4())
        try:
            outcome = await self._recorder.outcome(
                decision_id, self._authorizer.check(request_bytes, context.time_remaining())
            )
        except asyncio.CancelledError:
            # The caller gave up first (Envoy's timeout): there is nobody to
            # answer, but the decision log still says what became of the check.
            detail = "the caller cancelled the check before it was answered"
            self._recorder.record(decision_id, Outcome(Deny(DenyReason.DEADLINE_EXCEEDED, detail)), started)
            raise
        try:
            response = build_response(outcome.verdict, decision_id).SerializeToString()
        except Exception as exc:
            outcome = internal_error(decision_id, "response not built", exc)
            response = minimal_deny(decision_id, DenyReason.INTERNAL_ERROR.value).SerializeToString()
        if self._recorder.record(decision_id, outcome, started) is not outcome:
            response = minimal_deny(decision_id, DenyReason.INTERNAL_ERROR.value).SerializeToString()
        return response

    def handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        # No deserializer: the handler receives bytes and parses them itself.
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(self.check)}
        )
