"""The gRPC face: /envoy.service.auth.v3.Authorization/Check.

Requests arrive as raw bytes and are parsed inside the handler, so even a
message that does not decode gets a deny CheckResponse rather than a gRPC
error (which Envoy's failure_mode_allow would turn into an allow). The one
exception is a connection that has left its answers unread for longer than
any Envoy waits (see peer_guard.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import NoReturn, cast

import grpc

from sidecar import tracing
from sidecar.authorizer import Authorizer, Outcome
from sidecar.decision_id import new_decision_id
from sidecar.envoy.peer_guard import PeerGuard, Refusal
from sidecar.envoy.response import build_response, minimal_deny
from sidecar.recording import Recorder, internal_error
from sidecar.trace_context import from_pairs
from sidecar.verdict import Deny, DenyReason

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
SPAN_NAME = SERVICE_NAME + "/Check"


class CheckService:
    def __init__(self, authorizer: Authorizer, recorder: Recorder) -> None:
        self._authorizer = authorizer
        self._recorder = recorder
        self.received = 0  # checks that reached this handler: the drain waits until it stops growing
        self.peers = PeerGuard()

    async def check(self, request_bytes: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        self.received += 1
        decision_id = new_decision_id()
        # Envoy's tracer sends the trace context as gRPC metadata.
        tracing.begin_check(lambda: from_pairs(context.invocation_metadata() or ()), SPAN_NAME)
        peer = context.peer()
        refusal = self.peers.refusal(peer)
        if refusal is Refusal.STALLED:
            await self._end_stalled_call(decision_id, context, started)
        try:
            if refusal is Refusal.CANCELLING:
                outcome = Outcome(Deny(DenyReason.OVERLOADED, refusal.value))
            else:
                outcome = await self._recorder.outcome(
                    decision_id, self._authorizer.check(request_bytes, context.time_remaining(), decision_id)
                )
        except asyncio.CancelledError:
            # The caller gave up first (Envoy's timeout): there is nobody to
            # answer, but the decision log still says what became of the check.
            self.peers.cancelled(peer)
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
        # Counted until the call ends: a client that never reads its answers shows here.
        delivered = self.peers.sending(peer)
        context.add_done_callback(cast("grpc.aio.DoneCallback[bytes, bytes]", lambda _: delivered()))
        return response

    async def _end_stalled_call(
        self, decision_id: str, context: grpc.aio.ServicerContext[bytes, bytes], started: float
    ) -> NoReturn:
        """A bare status for a connection that reads no answers (see peer_guard)."""
        detail = Refusal.STALLED.value
        self._recorder.record(decision_id, Outcome(Deny(DenyReason.OVERLOADED, detail)), started)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, detail)

    def handler(self) -> grpc.GenericRpcHandler[bytes, bytes]:
        # No deserializer: the handler receives bytes and parses them itself.
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(self.check)}
        )
