"""Envoy's external processing filter. Gateways in front of MCP servers and
model APIs put their request policy in an ext_proc server (Envoy AI Gateway
does); with ``failure_mode_allow: true`` a server that is down, slow or answers
a gRPC error leaves the request to pass on as the client sent it."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, is_true

EXT_PROC_TYPES = frozenset(
    {
        "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "envoy.extensions.filters.http.ext_proc.v3alpha.ExternalProcessor",
    }
)


def check_ext_proc(config: dict[str, Json], path: Pointer) -> list[Issue]:
    if not is_true(config.get("failure_mode_allow")):
        return []
    return [
        rules.EXT_PROC_FAILURE_MODE_ALLOW.issue(
            (*path, "failure_mode_allow"),
            "failure_mode_allow: true on ext_proc: when its server cannot be reached, times out or fails "
            "the stream, Envoy passes the request on unprocessed (Envoy 1.40 answered 200 where the same "
            "filter without it answered 500), so whatever that server enforces is skipped",
            "set failure_mode_allow: false (the default); keep authorization in ext_authz with the sidecar",
        )
    ]
