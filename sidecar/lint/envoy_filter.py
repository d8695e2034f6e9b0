"""Checks on one ext_authz filter config (HTTP or network), wherever it appears:
a bootstrap, a listener, an xDS file, an Istio EnvoyFilter patch."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.envoy_body_view import check_body
from sidecar.lint.envoy_sent_headers import check_sent_headers
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.timeouts import ENVOY_DEFAULT_GRPC_TIMEOUT, Budget, below_budget, check_timeout, ms
from sidecar.lint.values import (
    PROBE_HEADER,
    Json,
    NameMatcher,
    as_dict,
    envoy_matchers,
    get_path,
    is_success_status,
    is_true,
    runtime_fraction,
    status_code,
)

_DENY_AT_DISABLE = "deny_at_disable: {default_value: true, runtime_key: <key>}"
UPSTREAM_HEADER_FIELDS = ("allowed_upstream_headers", "allowed_upstream_headers_to_append")
_CLIENT_HEADER_FIELDS = ("allowed_client_headers", "allowed_client_headers_on_success")
CLIENT_HEADERS_FIX = "list only the headers the client needs (e.g. www-authenticate, location, set-cookie)"
REMOVE_CLIENT_COPIES = (
    "remove client copies before ext_authz runs: list them in the route table's internal_only_headers, "
    "or remove them with an early_header_mutation_extensions header_mutation or a header_mutation filter "
    "placed before ext_authz; or make the authorization service set them on every allow"
)


def denies_at_disable(config: dict[str, Json]) -> bool:
    return is_true(get_path(config, "deny_at_disable", "default_value"))


def check_http_ext_authz(
    config: dict[str, Json], path: Pointer, sidecar: SidecarSettings, *, in_chain: bool
) -> list[Issue]:
    """``in_chain``: the filter sits in an HTTP connection manager, where the
    header checks that need the whole chain are made (``envoy_chain``)."""
    budget = sidecar.budget
    issues = _fail_open(config, path)
    issues += _enablement(config, path)
    issues += _status_on_error(config, path)
    issues += _service_timeouts(config, path, budget)
    issues += _body(config, path)
    issues += check_body(
        config.get("with_request_body"),
        (*path, "with_request_body"),
        sidecar.envoy_max_request_bytes,
        grpc="grpc_service" in config,
    )
    issues += check_sent_headers(config, path)
    issues += http_service_headers(config, path, in_chain=in_chain)
    if not is_true(config.get("validate_mutations")):
        issues.append(
            rules.VALIDATE_MUTATIONS_OFF.issue(
                path,
                "validate_mutations is not set: Envoy does not check the header names and values an "
                "authorization answer sets; an invalid one fails the request later (503) instead of at once",
                "set validate_mutations: true",
            )
        )
    return issues


def check_network_ext_authz(config: dict[str, Json], path: Pointer, budget: Budget) -> list[Issue]:
    return _fail_open(config, path) + _enablement(config, path) + _service_timeouts(config, path, budget)


def _fail_open(config: dict[str, Json], path: Pointer) -> list[Issue]:
    issues = []
    fail_open = is_true(config.get("failure_mode_allow"))
    if fail_open:
        issues.append(
            rules.FAILURE_MODE_ALLOW.issue(
                (*path, "failure_mode_allow"),
                "failure_mode_allow: true lets a request through whenever the check fails instead of "
                "answering: the sidecar unreachable, a gRPC error status, a timeout, an error_response "
                "(each counted in ext_authz.failure_mode_allowed)",
                "set failure_mode_allow: false (the default); the sidecar denies on its own failures",
            )
        )
    elif is_true(config.get("failure_mode_allow_header_add")):
        issues.append(
            rules.FAILURE_HEADER_WITHOUT_FAIL_OPEN.issue(
                (*path, "failure_mode_allow_header_add"),
                "failure_mode_allow_header_add has no effect: it marks requests let through by "
                "failure_mode_allow, which is off",
                "remove failure_mode_allow_header_add",
            )
        )
    if is_true(config.get("shadow_mode")):
        issues.append(
            rules.SHADOW_MODE.issue(
                (*path, "shadow_mode"),
                "shadow_mode: true records the decision but lets denied requests through (Envoy 1.40 "
                "answered 200 to a request the sidecar denied and counted it in ext_authz.shadow_denied)",
                "remove shadow_mode; try a candidate policy as a shadow policy in the sidecar instead, "
                "which never changes the enforced answer",
            )
        )
    return issues


def _enablement(config: dict[str, Json], path: Pointer) -> list[Issue]:
    if denies_at_disable(config):
        return []
    issues = []
    if "filter_enabled" in config:
        share, runtime_key = runtime_fraction(config["filter_enabled"])
        if share < 1.0:
            issues.append(
                rules.FILTER_DISABLED_FRACTION.issue(
                    (*path, "filter_enabled"),
                    f"filter_enabled checks only {share * 100:g}% of requests: the others skip authorization "
                    "and, without deny_at_disable, are let through",
                    f"remove filter_enabled so every request is checked, or set {_DENY_AT_DISABLE} so "
                    "skipped requests are refused with status_on_error",
                )
            )
        elif runtime_key is not None:
            issues.append(
                rules.FILTER_ENABLED_RUNTIME.issue(
                    (*path, "filter_enabled", "runtime_key"),
                    f"runtime key {runtime_key!r} can lower filter_enabled at run time; without "
                    "deny_at_disable the requests it then skips are let through",
                    f"set {_DENY_AT_DISABLE}, or drop filter_enabled",
                )
            )
    if "filter_enabled_metadata" in config:
        issues.append(
            rules.FILTER_ENABLED_METADATA.issue(
                (*path, "filter_enabled_metadata"),
                "filter_enabled_metadata checks only requests whose dynamic metadata matches; without "
                "deny_at_disable every other request skips authorization and is let through",
                f"set {_DENY_AT_DISABLE}, or remove filter_enabled_metadata",
            )
        )
    return issues


def _status_on_error(config: dict[str, Json], path: Pointer) -> list[Issue]:
    if "status_on_error" not in config:
        return [
            rules.STATUS_ON_ERROR_DEFAULT.issue(
                path,
                "status_on_error is not set: when the sidecar cannot be reached Envoy answers 403, the "
                "same status as a policy denial",
                "set status_on_error: {code: 503} so outages can be told apart from denials",
            )
        ]
    code = status_code(get_path(config, "status_on_error", "code"))
    if not is_success_status(code):
        return []
    return [
        rules.STATUS_ON_ERROR_2XX.issue(
            (*path, "status_on_error"),
            f"status_on_error is {code}: when the check fails, Envoy answers the client with a success "
            "status; the request does not reach the upstream, but clients and monitors see success",
            "use a 5xx such as status_on_error: {code: 503}",
        )
    ]


def _service_timeouts(config: dict[str, Json], path: Pointer, budget: Budget) -> list[Issue]:
    grpc_service = as_dict(config.get("grpc_service"))
    if grpc_service is not None:
        return grpc_timeout(grpc_service, (*path, "grpc_service"), budget)
    server_uri = as_dict(get_path(config, "http_service", "server_uri"))
    if server_uri is not None and "timeout" in server_uri:
        timeout_path = (*path, "http_service", "server_uri", "timeout")
        return check_timeout(server_uri["timeout"], timeout_path, budget, field="timeout", proxy="Envoy")
    return []  # http_service's timeout is required: Envoy refuses a config without one


def grpc_timeout(grpc_service: dict[str, Json], path: Pointer, budget: Budget) -> list[Issue]:
    if "timeout" in grpc_service:
        return check_timeout(
            grpc_service["timeout"], (*path, "timeout"), budget, field="timeout", proxy="Envoy"
        )
    if budget.min_proxy_timeout > ENVOY_DEFAULT_GRPC_TIMEOUT:
        return [
            below_budget(
                path, budget, ENVOY_DEFAULT_GRPC_TIMEOUT, field="timeout", proxy="Envoy", explicit=False
            )
        ]
    return [
        rules.MISSING_TIMEOUT.issue(
            path,
            f"grpc_service has no timeout, so Envoy waits {ms(ENVOY_DEFAULT_GRPC_TIMEOUT)}: enough for the "
            f"sidecar's {ms(budget.seconds)} budget (it needs {ms(budget.min_proxy_timeout)}), but by chance",
            f"set grpc_service.timeout explicitly, e.g. {budget.recommended}",
        )
    ]


def _body(config: dict[str, Json], path: Pointer) -> list[Issue]:
    body = as_dict(config.get("with_request_body"))
    if body is None or not is_true(body.get("allow_partial_message")):
        return []
    limit = body.get("max_request_bytes")
    return [
        rules.PARTIAL_BODY.issue(
            (*path, "with_request_body", "allow_partial_message"),
            f"allow_partial_message: true sends only the first {limit} bytes of a larger body: the policy "
            "sees a truncated body (input.truncated_body, header x-envoy-auth-partial-body: true)",
            "make the policy refuse or ignore a body when input.truncated_body is true, or set "
            "allow_partial_message: false so larger bodies are refused with 413",
        )
    ]


def http_service_headers(config: dict[str, Json], path: Pointer, *, in_chain: bool) -> list[Issue]:
    response_path: Pointer = (*path, "http_service", "authorization_response")
    response = as_dict(get_path(config, "http_service", "authorization_response"))
    if response is None:
        return []
    issues = []
    unverified: list[NameMatcher] = []
    for field in UPSTREAM_HEADER_FIELDS:
        for position, matcher in envoy_matchers(response.get(field)):
            if matcher.matches_anything:
                issues.append(
                    match_all_upstream((*response_path, field, "patterns", position), field, str(matcher))
                )
            else:
                unverified.append(matcher)
    if unverified and not in_chain:
        issues.append(unverified_upstream(response_path, [str(m) for m in unverified]))
    for field in _CLIENT_HEADER_FIELDS:
        for position, matcher in envoy_matchers(response.get(field)):
            if matcher.matches_anything:
                issues.append(
                    rules.CLIENT_HEADERS_MATCH_ALL.issue(
                        (*response_path, field, "patterns", position),
                        f"{field} pattern {matcher} matches arbitrary header names (even {PROBE_HEADER}): "
                        "the authorization service's internal headers are passed to the client too",
                        CLIENT_HEADERS_FIX,
                    )
                )
    return issues


def match_all_upstream(path: Pointer, field: str, pattern: str) -> Issue:
    return rules.UPSTREAM_HEADERS_MATCH_ALL.issue(
        path,
        f"{field} pattern {pattern} matches arbitrary header names (even {PROBE_HEADER}): any header of "
        "the authorization service's 200 reply is written onto the upstream request, so which headers "
        "carry authorization results cannot be known, nor client copies of them removed",
        "list the exact headers the authorization service sets, and remove client copies of them before "
        "ext_authz runs",
    )


def unverified_upstream(path: Pointer, names: list[str]) -> Issue:
    return rules.UPSTREAM_HEADER_UNVERIFIED.issue(
        path,
        f"{', '.join(names)}: set from the authorization service's 200 reply, but when the reply does not "
        "set one, the client's own copy reaches the upstream; whether client copies are removed "
        "cannot be seen from this file",
        REMOVE_CLIENT_COPIES,
    )
