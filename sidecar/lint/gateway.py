"""The Envoy Gateway linter: ``SecurityPolicy.spec.extAuth``."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.timeouts import Budget, check_timeout, ms
from sidecar.lint.values import Json, as_dict, as_list, get_path, is_success_status, is_true, status_code

SECURITY_POLICY = "gateway-security-policy"
GATEWAY_DEFAULT_TIMEOUT = 10.0  # seconds


def lint(data: Json, sidecar: SidecarSettings) -> tuple[set[str], list[Issue]]:
    budget = sidecar.budget
    document = as_dict(data)
    if document is None or not (
        str(document.get("apiVersion", "")).startswith("gateway.envoyproxy.io/")
        and document.get("kind") == "SecurityPolicy"
    ):
        return set(), []
    ext_auth = as_dict(get_path(document, "spec", "extAuth"))
    if ext_auth is None:
        return {SECURITY_POLICY}, []
    return {SECURITY_POLICY}, _ext_auth(ext_auth, ("spec", "extAuth"), budget)


def _ext_auth(config: dict[str, Json], path: Pointer, budget: Budget) -> list[Issue]:
    issues = []
    # Gateway API durations have no fractions: suggest whole milliseconds.
    suggestion = f"{round(budget.recommended_seconds * 1000)}ms"
    if is_true(config.get("failOpen")):
        issues.append(
            rules.GATEWAY_FAIL_OPEN.issue(
                (*path, "failOpen"),
                "extAuth.failOpen: true lets a request through whenever the check fails, and Envoy Gateway "
                "also drops the check when the extAuth configuration is invalid",
                "remove failOpen or set it to false (the default)",
            )
        )
    if "timeout" in config:
        issues += check_timeout(
            config["timeout"],
            (*path, "timeout"),
            budget,
            field="timeout",
            proxy="Envoy",
            suggestion=suggestion,
        )
    else:
        issues.append(
            rules.GATEWAY_DEFAULT_TIMEOUT.issue(
                path,
                f"extAuth has no timeout, so Envoy Gateway sets {GATEWAY_DEFAULT_TIMEOUT:g} s: a hung "
                f"sidecar holds each request that long, while an answer never needs more than "
                f"{ms(budget.min_proxy_timeout)}",
                f"set timeout: {suggestion}",
            )
        )
    if "statusOnError" not in config:
        issues.append(
            rules.STATUS_ON_ERROR_DEFAULT.issue(
                path,
                "extAuth has no statusOnError: when the sidecar cannot be reached Envoy answers 403, the "
                "same status as a policy denial",
                "set statusOnError: 503 so outages can be told apart from denials",
            )
        )
    elif is_success_status(code := status_code(config["statusOnError"])):
        issues.append(
            rules.STATUS_ON_ERROR_2XX.issue(
                (*path, "statusOnError"),
                f"extAuth answers failed checks with {code}, a success status: the request does not "
                "reach the upstream, but clients and monitors see success",
                "use a 5xx such as statusOnError: 503",
            )
        )
    headers = [str(h) for h in as_list(get_path(config, "http", "headersToBackend")) or []]
    if headers:
        issues.append(
            rules.UPSTREAM_HEADER_UNVERIFIED.issue(
                (*path, "http", "headersToBackend"),
                f"{', '.join(headers)} are set from the authorization service's 200 reply, but when the "
                "reply does not set one, the client's own copy reaches the backend; Envoy Gateway does not "
                "remove client copies",
                "make the authorization service set each of them on every allow, or remove client copies "
                "before ext_authz (e.g. with an EnvoyPatchPolicy adding a header_mutation filter)",
            )
        )
    return issues
