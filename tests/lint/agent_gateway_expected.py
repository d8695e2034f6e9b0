"""The findings expected on the fixtures of agent gateways, Envoy ext_proc and
Istio CUSTOM coverage (merged into test_fixtures.EXPECTED)."""

from __future__ import annotations

from tests.lint.helpers import ext_authz, hcm

ROUTE = "/binds/0/listeners/0/routes"
AUTHZ = f"{ROUTE}/0/policies/extAuthz"
BODY = f"{AUTHZ}/includeRequestBody"
TRAFFIC = "/spec/traffic/extAuth"
MCP_ROUTE = "/spec/securityPolicy/extAuth"


def envoy_defaults(*listeners: int) -> set[tuple[int, str, str]]:
    """What Envoy's defaults leave to the client on each listener."""
    return {
        (0, rule, hcm(n))
        for n in listeners
        for rule in ("forwarded-facts-from-client", "path-not-normalized")
    }


AGENT_GATEWAY_EXPECTED: dict[str, set[tuple[int, str, str]]] = {
    "envoy/ext-proc.yaml": {
        (0, "ext-proc-failure-mode-allow", f"{ext_authz(0, 1)}/failure_mode_allow"),
        (0, "ext-proc-failure-mode-allow", f"{ext_authz(1, 1)}/failureModeAllow"),
    }
    | envoy_defaults(0, 1, 2),
    "agentgateway/config.yaml": {
        (0, "agentgateway-fail-open", f"{AUTHZ}/failureMode"),
        (0, "agentgateway-decision-cache", f"{AUTHZ}/cache"),
        (0, "body-as-string", BODY),
        (0, "partial-body", f"{BODY}/allowPartialMessage"),
        (0, "partial-body-limit-mismatch", f"{BODY}/maxRequestBytes"),
        (0, "mcp-guardrails-fail-open", f"{ROUTE}/0/policies/mcpGuardrails/processors/0/failureMode"),
        # serde matches names exactly: "Allow" is refused with the whole file
        (0, "not-verified", f"{ROUTE}/1/policies/extAuthz/conditional/1/failureMode"),
    },
    "agentgateway/policy.yaml": {
        (0, "agentgateway-fail-open", f"{TRAFFIC}/failureMode"),
        (0, "agentgateway-decision-cache", f"{TRAFFIC}/cache"),
        (0, "mcp-guardrails-fail-open", "/spec/backend/mcp/guardrails/processors/0/remote/failureMode"),
        (1, "not-verified", f"{TRAFFIC}/conditional/1/policy/failureMode"),  # the CRD's enum refuses it
    },
    "ai-gateway/mcp-route.yaml": {
        (0, "gateway-fail-open", f"{MCP_ROUTE}/failOpen"),
        (0, "gateway-default-timeout", MCP_ROUTE),
    },
    "istio/custom-coverage.yaml": {
        (0, "custom-policy-partial-scope", "/spec/rules"),  # allow-health covers the namespace
        (2, "custom-policy-uncovered", "/spec/rules"),
        (2, "custom-policy-client-exemption", "/spec/rules/0/to/0/operation/notMethods"),
        (4, "istio-dry-run", "/metadata/annotations/istio.io~1dry-run"),
        (5, "custom-policy-path-exemption", "/spec/rules/0/to/0/operation/paths"),  # covered mesh-wide
    },
}
