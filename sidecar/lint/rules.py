"""Every rule the linter knows, with its fixed severity. docs/lint.md lists them;
a test checks that each one has a fixture that triggers it."""

from __future__ import annotations

from sidecar.lint.findings import Rule, Severity

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO

# -- Envoy ext_authz filter settings
FAILURE_MODE_ALLOW = Rule(
    "failure-mode-allow", ERROR, "failure_mode_allow: true lets requests through on errors"
)
SHADOW_MODE = Rule("shadow-mode", ERROR, "shadow_mode: true records denials but lets the requests through")
FILTER_DISABLED_FRACTION = Rule(
    "filter-disabled-fraction", ERROR, "filter_enabled below 100% without deny_at_disable skips some checks"
)
FILTER_ENABLED_RUNTIME = Rule(
    "filter-enabled-runtime",
    WARNING,
    "a runtime key can turn filter_enabled down while deny_at_disable is unset",
)
FILTER_ENABLED_METADATA = Rule(
    "filter-enabled-metadata",
    ERROR,
    "filter_enabled_metadata without deny_at_disable skips unmatched requests",
)
STATUS_ON_ERROR_2XX = Rule("status-on-error-2xx", ERROR, "errors are answered with a 2xx success status")
STATUS_ON_ERROR_DEFAULT = Rule(
    "status-on-error-default",
    INFO,
    "errors are answered 403 like denials; a distinct status tells them apart",
)
MISSING_TIMEOUT = Rule("missing-timeout", INFO, "no explicit timeout; Envoy's 200 ms default applies")
TIMEOUT_BELOW_BUDGET = Rule(
    "timeout-below-budget", WARNING, "the proxy gives up before the sidecar's budget has run out"
)
INVALID_TIMEOUT = Rule("invalid-timeout", WARNING, "a timeout that cannot be read as a duration")
VALIDATE_MUTATIONS_OFF = Rule("validate-mutations-off", INFO, "validate_mutations is not set")
PARTIAL_BODY = Rule("partial-body", INFO, "a truncated body may reach the policy")
FAILURE_HEADER_WITHOUT_FAIL_OPEN = Rule(
    "failure-header-without-fail-open", INFO, "failure_mode_allow_header_add has no effect without fail-open"
)
UPSTREAM_HEADERS_MATCH_ALL = Rule(
    "upstream-headers-match-all",
    WARNING,
    "a header pattern copies arbitrary authorization-reply headers upstream",
)
FORGEABLE_UPSTREAM_HEADER = Rule(
    "forgeable-upstream-header", WARNING, "a client can send an authorization-derived header itself"
)
UPSTREAM_HEADER_UNVERIFIED = Rule(
    "upstream-header-unverified",
    INFO,
    "client copies of authorization-derived headers cannot be checked here",
)
CLIENT_HEADERS_MATCH_ALL = Rule(
    "client-headers-match-all", INFO, "every authorization-reply header is copied to the client"
)

# -- Envoy settings that let the policy's view of a request differ from the upstream's
BODY_AS_STRING = Rule(
    "body-as-string", WARNING, "the body reaches the policy as a string Envoy may have rewritten"
)
PARTIAL_BODY_LIMIT_MISMATCH = Rule(
    "partial-body-limit-mismatch",
    WARNING,
    "Envoy's body limit differs from the one the sidecar was told, so a cut body can pass as complete",
)
BODY_NOT_FORWARDED = Rule(
    "body-not-forwarded", WARNING, "a route sends no body to the policy while the upstream gets it"
)
FORWARDED_FACTS_FROM_CLIENT = Rule(
    "forwarded-facts-from-client",
    WARNING,
    "the client can set the x-forwarded-for, x-forwarded-proto or scheme the policy sees",
)
XFF_TRUSTED_HOPS = Rule(
    "xff-trusted-hops", WARNING, "Envoy trusts x-forwarded-for entries that whoever connects can write"
)
CLIENT_FORWARDING_HEADERS = Rule(
    "client-forwarding-headers",
    INFO,
    "forwarding headers Envoy never sets reach the policy as the client sent them",
)
CREDENTIAL_HEADERS_NOT_SENT = Rule(
    "credential-headers-not-sent", WARNING, "the check leaves out credential headers the upstream receives"
)

# -- Envoy filter chains and routes
MISSING_EXT_AUTHZ = Rule(
    "missing-ext-authz", ERROR, "an HTTP connection manager forwards requests without ext_authz"
)
MISSING_EXT_AUTHZ_LOCAL = Rule(
    "missing-ext-authz-local", INFO, "an HTTP connection manager without ext_authz answers only locally"
)
EXT_AUTHZ_AFTER_ROUTER = Rule("ext-authz-after-router", ERROR, "ext_authz placed after the router filter")
EXT_AUTHZ_DISABLED_BY_DEFAULT = Rule(
    "ext-authz-disabled-by-default", ERROR, "the ext_authz filter is disabled unless a route enables it"
)
EXT_AUTHZ_OPTIONAL = Rule(
    "ext-authz-optional", WARNING, "is_optional: true lets Envoy drop the ext_authz filter"
)
EXT_AUTHZ_BEHIND_MATCHER = Rule(
    "ext-authz-behind-matcher", WARNING, "a matcher decides which requests ext_authz sees"
)
UPGRADE_WITHOUT_EXT_AUTHZ = Rule(
    "upgrade-without-ext-authz", ERROR, "an upgrade filter chain (e.g. WebSocket) lacks ext_authz"
)
PER_ROUTE_DISABLED = Rule(
    "per-route-disabled", ERROR, "ext_authz is disabled for a route, virtual host or route table"
)
ROUTE_CACHE_CLEARED = Rule(
    "route-cache-cleared-after-ext-authz",
    WARNING,
    "a filter after ext_authz may re-route a request it skipped",
)

PER_ROUTE_IGNORED = Rule(
    "per-route-ignored", INFO, "a per-route ext_authz override that no ext_authz filter reads"
)
SERVES_BEFORE_EXT_AUTHZ = Rule(
    "serves-before-ext-authz", ERROR, "a filter before ext_authz answers requests from upstream content"
)
PATH_NOT_NORMALIZED = Rule(
    "path-not-normalized", WARNING, "the policy sees a path the upstream may read differently"
)

# -- Envoy listeners and transport
TLS_CLIENT_CERT_UNVERIFIED = Rule(
    "tls-client-cert-unverified",
    ERROR,
    "client certificates that fail verification become the peer principal",
)
TLS_CLIENT_CERT_NOT_REQUESTED = Rule(
    "tls-client-cert-not-requested",
    WARNING,
    "require_client_certificate without a trusted CA: Envoy asks for no certificate",
)

# -- what the linter cannot see
NOT_VERIFIED = Rule(
    "not-verified",
    WARNING,
    "configuration the linter cannot see or read decides whether requests are checked",
)

# -- Istio
ISTIO_FAIL_OPEN = Rule("istio-fail-open", ERROR, "an Istio ext_authz provider with failOpen: true")
ISTIO_DEFAULT_TIMEOUT = Rule(
    "istio-default-timeout", WARNING, "an Istio ext_authz provider without timeout (600 s)"
)
CUSTOM_POLICY_NO_RULES = Rule(
    "custom-policy-no-rules", WARNING, "a CUSTOM AuthorizationPolicy that matches no request"
)
CUSTOM_POLICY_EXEMPTS_IDENTITIES = Rule(
    "custom-policy-exempts-identities",
    WARNING,
    "a CUSTOM AuthorizationPolicy that exempts callers by identity",
)
CUSTOM_POLICY_PARTIAL_SCOPE = Rule(
    "custom-policy-partial-scope", INFO, "a CUSTOM AuthorizationPolicy that checks only some requests"
)
CUSTOM_POLICY_CLIENT_EXEMPTION = Rule(
    "custom-policy-client-exemption",
    ERROR,
    "a CUSTOM AuthorizationPolicy that a client skips by its host, method, headers or token",
)
CUSTOM_POLICY_PATH_EXEMPTION = Rule(
    "custom-policy-path-exemption",
    WARNING,
    "a CUSTOM AuthorizationPolicy scoped by paths that a client can write around",
)
CUSTOM_POLICY_UNCOVERED = Rule(
    "custom-policy-uncovered",
    WARNING,
    "a CUSTOM AuthorizationPolicy leaves requests unchecked and no ALLOW policy linted covers them",
)
ENVOYFILTER_REMOVES_EXT_AUTHZ = Rule(
    "envoyfilter-removes-ext-authz",
    ERROR,
    "an EnvoyFilter patch that removes or replaces the ext_authz filter istiod generates",
)
ISTIO_DRY_RUN_DENY = Rule("istio-dry-run-deny", ERROR, "a DENY AuthorizationPolicy in dry-run denies nothing")
ISTIO_DRY_RUN = Rule("istio-dry-run", WARNING, "an AuthorizationPolicy in dry-run is not enforced")

# -- Envoy Gateway
GATEWAY_FAIL_OPEN = Rule(
    "gateway-fail-open", ERROR, "an Envoy Gateway SecurityPolicy with extAuth.failOpen: true"
)
GATEWAY_ROUTE_POLICY_DROPS_EXT_AUTH = Rule(
    "gateway-route-policy-drops-ext-auth",
    ERROR,
    "a route-level SecurityPolicy without extAuth replaces a Gateway-level one with extAuth",
)
GATEWAY_DEFAULT_TIMEOUT = Rule(
    "gateway-default-timeout", INFO, "an Envoy Gateway extAuth without timeout (10 s)"
)

# -- other proxies' callouts
EXT_PROC_FAILURE_MODE_ALLOW = Rule(
    "ext-proc-failure-mode-allow",
    WARNING,
    "an Envoy ext_proc filter with failure_mode_allow: true passes requests its server never saw",
)

# -- agent gateways
AGENTGATEWAY_FAIL_OPEN = Rule(
    "agentgateway-fail-open", ERROR, "an agentgateway extAuthz whose failureMode lets requests through"
)
AGENTGATEWAY_DECISION_CACHE = Rule(
    "agentgateway-decision-cache",
    WARNING,
    "an agentgateway extAuthz cache reuses an answer without asking the authorizer",
)
MCP_GUARDRAILS_FAIL_OPEN = Rule(
    "mcp-guardrails-fail-open",
    ERROR,
    "an agentgateway MCP policy processor with failureMode failOpen",
)

# -- any document
DUPLICATE_KEY = Rule("duplicate-key", WARNING, "a key set twice in one mapping; the last one wins")

ALL_RULES: tuple[Rule, ...] = tuple(value for value in list(globals().values()) if isinstance(value, Rule))
