"""What the linter must know of the sidecar the proxy calls, to check the
proxy's settings against it: the sidecar's check budget (``--opa-timeout``)
and the Envoy body limit it was told (``--envoy-max-request-bytes``)."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.lint.timeouts import Budget

# The sidecar's own default for --envoy-max-request-bytes (a test keeps them equal).
DEFAULT_ENVOY_MAX_REQUEST_BYTES = 8192


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    budget: Budget
    envoy_max_request_bytes: int = DEFAULT_ENVOY_MAX_REQUEST_BYTES
