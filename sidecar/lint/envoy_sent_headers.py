"""Credential headers an ext_authz check leaves out while the upstream gets them:
an ``allowed_headers`` list without them (in HTTP mode, no list at all) or a
``disallowed_headers`` pattern that matches them."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, envoy_matchers, get_path

# Headers that carry a credential; a policy that refuses a second or a revoked one
# must see them (Authorization itself is always sent).
CREDENTIAL_HEADERS = (
    "cookie",
    "proxy-authorization",
    "x-api-key",
    "x-auth-token",
    "x-access-token",
    "x-vault-token",
    "x-amz-security-token",
    "x-csrf-token",
    "x-xsrf-token",
)


def check_sent_headers(config: dict[str, Json], path: Pointer) -> list[Issue]:
    """Credential headers the ext_authz filter at ``path`` leaves out of the check."""
    http_mode = "http_service" in config
    allowed_path: Pointer = (*path, "allowed_headers")
    allowed_value = config.get("allowed_headers")
    if allowed_value is None:
        allowed_path = (*path, "http_service", "authorization_request", "allowed_headers")
        allowed_value = get_path(config, "http_service", "authorization_request", "allowed_headers")
    issues = []
    if allowed_value is not None or http_mode:
        allowed = [matcher for _, matcher in envoy_matchers(allowed_value)]
        missing = [name for name in CREDENTIAL_HEADERS if not any(m.matches(name) for m in allowed)]
        if missing:
            where = allowed_path if allowed_value is not None else path
            default = (
                ""
                if allowed_value is not None
                else " (unset in HTTP mode: Host, method, path, Content-Length and Authorization only)"
            )
            issues.append(
                rules.CREDENTIAL_HEADERS_NOT_SENT.issue(
                    where,
                    f"allowed_headers{default} leaves out {', '.join(missing)}: the upstream gets these "
                    "credentials but the policy never sees them, so it cannot refuse a second or a "
                    "revoked one",
                    "send every header, as gRPC mode does: remove allowed_headers in gRPC mode; in HTTP mode "
                    'allow them all (patterns: [{safe_regex: {regex: ".*"}}])',
                )
            )
    for position, matcher in envoy_matchers(config.get("disallowed_headers")):
        hidden = [name for name in CREDENTIAL_HEADERS if matcher.matches(name)]
        if hidden:
            issues.append(
                rules.CREDENTIAL_HEADERS_NOT_SENT.issue(
                    (*path, "disallowed_headers", "patterns", position),
                    f"disallowed_headers pattern {matcher} keeps {', '.join(hidden)} from the policy while "
                    "the upstream gets them",
                    "remove the pattern; to keep a credential out of decision logs, mask it in the sidecar "
                    "(--mask-header)",
                )
            )
    return issues
