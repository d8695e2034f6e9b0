"""The shipped Envoy configuration of either mode (gRPC or HTTP ext_authz) in front of the
sidecar and the echo upstream, with the fault-injecting OPA recording every input document:
what the policy saw, next to what the application received."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.e2e.envoy_wire import Reply
from tests.e2e.stack import Stack, running_stack
from tests.e2e.test_http_mode_envoy import running_http_stack
from tests.fault_opa import FaultOpa

MODES = ("grpc", "http")
# What each mode's listener takes: the HTTP-mode one HTTP/1.1 only (codec_type: HTTP1),
# since its check is HTTP/1.1 text that trims what an HTTP/2 header value keeps.
PROTOCOLS = {"grpc": ("http1", "http2"), "http": ("http1",)}
MODE_PROTOCOLS = [(mode, protocol) for mode in MODES for protocol in PROTOCOLS[mode]]


@contextlib.contextmanager
def running_mode_stack(mode: str, opa_url: str) -> Iterator[Stack]:
    """The shipped fail-closed configuration of `mode` -> sidecar -> the OPA at `opa_url`."""
    stack = running_stack(opa_url) if mode == "grpc" else running_http_stack(opa_url)
    with stack as running:
        yield running


@dataclass(frozen=True)
class Seen:
    """One request as the policy saw it (`input`) and as the upstream got it (`upstream`,
    None when it did not reach the upstream)."""

    reply: Reply
    input: dict[str, Any]
    upstream: dict[str, Any] | None

    @property
    def http(self) -> dict[str, Any]:
        http: dict[str, Any] = self.input["attributes"]["request"]["http"]
        return http

    @property
    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = self.http.get("headers", {})
        return headers

    def policy_body(self) -> bytes:
        """The body bytes the policy got: rawBody (base64) when present, else body."""
        if "rawBody" in self.http:
            return base64.b64decode(self.http["rawBody"])
        return str(self.http.get("body", "")).encode()


def send(stack: Stack, fault: FaultOpa, request: Callable[[int], Reply]) -> Seen:
    """Send one request through `stack`; what the policy and the upstream made of it."""
    checks, received = fault.count, len(stack.upstream.received)
    reply = request(stack.envoy.port)
    # Both record a request before answering it, so the reply means they are done.
    asked = [r for r in fault.requests[checks:] if r.path.startswith("/v1/data/")]
    assert len(asked) == 1, f"OPA asked {len(asked)} times; the client got {reply}"
    [opa_request] = asked
    reached = stack.upstream.received[received:]
    assert len(reached) <= 1, reached
    return Seen(reply, opa_request.json()["input"], reached[0] if reached else None)
