"""The OPA client: one POST to the Data API per check, within a deadline.

Every way this can fail raises OpaFailure carrying the deny reason; only a
complete, strictly parsed JSON object comes back.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from sidecar import tracing
from sidecar.opa.http1 import ConnectionPool, Endpoint, ProtocolError, TransportError
from sidecar.opa.strict_json import StrictJSONError, loads_object
from sidecar.verdict import DenyReason


class OpaFailure(Exception):
    """No usable answer; ``reason`` says why, ``detail`` is for the logs."""

    def __init__(self, reason: DenyReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def data_api_path(path_prefix: str, decision_path: str, *, strict_builtin_errors: bool) -> str:
    """``/prefix/v1/data/a/b`` with each segment percent-encoded."""
    segments = "/".join(quote(s, safe="") for s in decision_path.split("/"))
    query = "?strict-builtin-errors=true" if strict_builtin_errors else ""
    return f"{path_prefix}/v1/data/{segments}{query}"


class OpaClient:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        path_prefix: str = "",
        decision_path: str,
        strict_builtin_errors: bool = True,
        max_response_bytes: int = 1 << 20,
        authorization: Any = None,
    ) -> None:
        self._pool = ConnectionPool(endpoint)
        self._probe_pool = ConnectionPool(endpoint, max_idle=1)
        self._max_response_bytes = max_response_bytes
        # ``authorization`` returns the bearer token (or None) for each request,
        # so a rotated token file takes effect without a restart.
        self._authorization = authorization
        target = data_api_path(path_prefix, decision_path, strict_builtin_errors=strict_builtin_errors)
        self._health_head = f"GET {path_prefix}/health HTTP/1.1\r\nHost: {endpoint.host_header}\r\n".encode()
        self._head = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {endpoint.host_header}\r\n"
            "User-Agent: opa-sidecar\r\n"
            "Accept: application/json\r\n"
            "Content-Type: application/json\r\n"
        ).encode("ascii")

    def _with_token(self, head: bytes) -> bytes:
        if self._authorization is not None:
            token = self._authorization()
            if token:
                head += b"Authorization: Bearer " + token.encode("ascii") + b"\r\n"
        return head

    async def healthy(self, seconds: float) -> bool:
        """OPA's ``GET /health`` answered 200 within ``seconds`` (readiness only;
        never part of a check)."""
        request = self._with_token(self._health_head) + b"\r\n"
        try:
            async with asyncio.timeout(seconds):
                response = await self._probe_pool.request(request, 65536)
        except (TimeoutError, TransportError, ProtocolError):
            return False
        return response.status == 200

    async def evaluate(self, body: bytes, deadline: float) -> dict[str, Any]:
        """POST ``body`` (``{"input": ...}``); ``deadline`` is in loop time."""
        call = tracing.opa_call()
        if call is None:
            return await self._exchange(body, deadline, None)
        with call:  # the trace context goes to OPA, so OPA's spans join the check's trace
            return await self._exchange(body, deadline, call)

    async def _exchange(self, body: bytes, deadline: float, call: tracing.OpaCall | None) -> dict[str, Any]:
        head = self._with_token(self._head)
        if call is not None:
            head += call.headers
        request = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._pool.request(request, self._max_response_bytes)
        except TimeoutError:
            raise OpaFailure(
                DenyReason.OPA_TIMEOUT, "no complete answer from OPA within the budget"
            ) from None
        except TransportError as exc:
            raise OpaFailure(DenyReason.OPA_UNREACHABLE, str(exc)) from None
        except ProtocolError as exc:
            raise OpaFailure(DenyReason.OPA_BAD_RESPONSE, str(exc)) from None
        if call is not None:
            call.status = response.status
        if response.status != 200:
            raise OpaFailure(
                DenyReason.OPA_HTTP_STATUS, f"OPA answered HTTP {response.status}{_error_code(response.body)}"
            )
        ctype = response.headers.get("content-type", "")
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            raise OpaFailure(
                DenyReason.OPA_BAD_RESPONSE, f"content-type is {ctype[:60]!r}, not application/json"
            )
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise OpaFailure(DenyReason.OPA_BAD_RESPONSE, "encoded response body was not asked for")
        try:
            return loads_object(bytes(response.body))
        except StrictJSONError as exc:
            raise OpaFailure(DenyReason.OPA_BAD_RESPONSE, str(exc)) from None

    def close(self) -> None:
        self._pool.close()
        self._probe_pool.close()


def _error_code(body: bytearray) -> str:
    """OPA's error ``code`` (e.g. ``internal_error``) for the log; never the message,
    which can quote input."""
    try:
        code = loads_object(bytes(body)).get("code")
    except StrictJSONError:
        return ""
    if isinstance(code, str) and code.isidentifier() and len(code) <= 40:
        return f" ({code})"
    return ""
