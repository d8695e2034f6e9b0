"""ext_authz HTTP mode (``/ext_authz/...``) and the JSON check API (``POST /v1/check``).

In HTTP mode Envoy allows on exactly 200 and treats 5xx as an error that
``failure_mode_allow`` can turn into an allow, so here a deny is never 200 and
never 5xx: a policy status of 200 or 5xx and every failure become the
configured failure status (default 403).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from sidecar import tracing
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar.authorizer import Authorizer, Outcome
from sidecar.decision_id import new_decision_id
from sidecar.opa.strict_json import StrictJSONError, loads_object
from sidecar.recording import Recorder, internal_error
from sidecar.trace_context import extract
from sidecar.verdict import Allow, Deny, DenyReason, Verdict

PREFIX = "/ext_authz"
DECISION_HEADER = "x-opa-sidecar-decision-id"
MAX_BODY_BYTES = 16 << 20


# Headers that describe Envoy's call to the sidecar, not the client's request: gRPC mode
# has none of them. The check's Content-Length is the length of what was forwarded, and
# Host is the client's :authority, which gRPC mode carries under that name only.
CHECK_CALL_HEADERS = frozenset(
    {"content-length", "host", "x-envoy-expected-rq-timeout-ms", "x-envoy-internal"}
)


def to_check_request(request: web.Request, body: bytes) -> CheckRequest:
    """What Envoy forwarded, in the shape of the gRPC mode's CheckRequest.

    Left empty because HTTP mode does not carry them: the client's protocol (this
    hop is Envoy's own HTTP/1.1), the client's Content-Length, the source and
    destination addresses. `size` is the bytes forwarded; gRPC mode gives the
    bytes Envoy had buffered, which is more when the body was cut.
    """
    target = request.raw_path[len(PREFIX) :] or "/"
    if not target.startswith("/"):
        target = "/" + target
    check = CheckRequest()
    http = check.attributes.request.http
    http.method = request.method
    http.path = target
    http.host = request.headers.get("host", "")
    # The shipped configurations have Envoy write x-forwarded-proto from the connection.
    http.scheme = request.headers.get("x-forwarded-proto", "")
    http.size = len(body)
    check.attributes.request.time.FromNanoseconds(time.time_ns())
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        if key in CHECK_CALL_HEADERS:
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    headers.update({":method": request.method, ":path": target, ":authority": http.host})
    if http.scheme:
        headers[":scheme"] = http.scheme
    for key, value in headers.items():
        http.headers[key] = value
    # As bytes, like the shipped gRPC configuration (pack_as_bytes): the same input either way.
    http.raw_body = body
    return check


def _timeout_ms(request: web.Request, header: str, scale: float) -> float | None:
    raw = request.headers.get(header)
    if raw is None:
        return None
    try:
        value = float(raw) * scale
    except ValueError:
        return 0.0  # unreadable deadline: no time to spend
    return value if value == value else 0.0


# aiohttp answers an Expect other than 100-continue with a 417 of its own, which
# no decision records. Envoy sends a check's body at once and never waits for a 100:
# its copy of the client's Expect is a header for the policy (the upstream gets it
# too), not a question to this hop.
async def _forwarded_expect(_request: web.Request) -> None:
    return None


async def _caller_expect(request: web.Request) -> None:
    """A JSON-API caller asking 100-continue gets it; any other Expect is left to the check."""
    if request.version == HttpVersion11 and request.headers.get("expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started


class HttpAuthz:
    def __init__(self, authorizer: Authorizer, recorder: Recorder, failure_status: int) -> None:
        self._authorizer = authorizer
        self._recorder = recorder
        self._failure_status = failure_status

    def register(self, app: web.Application) -> None:
        app.router.add_route("*", PREFIX + "{tail:(/.*)?}", self.ext_authz, expect_handler=_forwarded_expect)
        app.router.add_post("/v1/check", self.check_json, expect_handler=_caller_expect)

    async def ext_authz(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        decision_id = new_decision_id()
        tracing.begin_check(lambda: extract(request.headers.get), "ext_authz HTTP check")
        # Envoy sends its own timeout for this call; answer inside it.
        remaining = _timeout_ms(request, "x-envoy-expected-rq-timeout-ms", 0.001)
        try:
            body = await request.read()
            pending = self._authorizer.check_request(to_check_request(request, body), remaining, decision_id)
        except Exception as exc:
            outcome = internal_error(decision_id, "request not read", exc)
        else:
            outcome = await self._recorder.outcome(decision_id, pending)
        verdict = outcome.verdict
        if isinstance(verdict, Allow) and (
            verdict.query_parameters_to_set or verdict.query_parameters_to_remove
        ):
            # HTTP mode cannot carry these; an allow that cannot be applied as
            # the policy asked is not given.
            detail = "query parameter mutations need gRPC mode"
            outcome = Outcome(Deny(DenyReason.INVALID_RESULT, detail), outcome.request, outcome.input)
        try:
            response = self._envoy_response(outcome.verdict, decision_id)
        except Exception as exc:
            outcome = internal_error(decision_id, "response not built", exc)
            response = self._failure(decision_id)
        if self._recorder.record(decision_id, outcome, started) is not outcome:
            response = self._failure(decision_id)
        return response

    async def check_json(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        decision_id = new_decision_id()
        tracing.begin_check(lambda: extract(request.headers.get), "POST /v1/check")
        remaining = _timeout_ms(request, "timeout", 1.0)
        try:
            document: dict[str, Any] | None = loads_object(await request.read())
        except StrictJSONError:
            document = None
        except Exception as exc:
            document = None
            outcome = internal_error(decision_id, "request not read", exc)
        if document is None:
            outcome = Outcome(Deny(DenyReason.BAD_REQUEST, "body is not one JSON object", http_status=400))
        else:
            outcome = await self._recorder.outcome(
                decision_id, self._authorizer.check_document(document, remaining, decision_id)
            )
        verdict = self._recorder.record(decision_id, outcome, started).verdict
        allowed = isinstance(verdict, Allow)
        reason = verdict.reason.value if isinstance(verdict, Deny) else "allowed"
        return web.json_response(
            {"allowed": allowed, "reason": reason, "decision_id": decision_id},
            status=200 if allowed else 403,
            headers={DECISION_HEADER: decision_id},
        )

    def _failure(self, decision_id: str) -> web.Response:
        return web.Response(status=self._failure_status, headers={DECISION_HEADER: decision_id})

    def _envoy_response(self, verdict: Verdict, decision_id: str) -> web.Response:
        headers: CIMultiDict[str] = CIMultiDict({DECISION_HEADER: decision_id})
        if isinstance(verdict, Allow):
            for name, value in (*verdict.headers, *verdict.response_headers_to_add):
                headers.add(name, value)
            if verdict.request_headers_to_remove:
                headers["x-envoy-auth-headers-to-remove"] = ", ".join(verdict.request_headers_to_remove)
            return web.Response(status=200, headers=headers)
        status = verdict.http_status
        if status == 200 or status >= 500 or verdict.reason is not DenyReason.POLICY_DENIED:
            status = self._failure_status if verdict.reason is not DenyReason.BAD_REQUEST else 400
        for name, value in verdict.headers:
            headers.add(name, value)
        if verdict.body and "content-type" not in headers:
            headers["content-type"] = "text/plain; charset=utf-8"
        return web.Response(status=status, headers=headers, body=verdict.body.encode())
