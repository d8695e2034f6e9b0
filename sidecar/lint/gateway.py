"""The Envoy Gateway linter: ``SecurityPolicy.spec.extAuth``, read as the
Kubernetes API server reads it against the CRD's schema: camelCase names only
(any other key is dropped), a JSON bool for failOpen (YAML 1.1 words such as
``yes`` become one on the way), Gateway API durations in whole units. Findings
name the Envoy settings Envoy Gateway's translator writes from it."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.envoy_sent_headers import CREDENTIAL_HEADERS
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.gateway_context import (
    ROUTE_KINDS,
    GatewayContext,
    is_security_policy,
    namespace_of,
    survey_gateway,
    target_refs,
)
from sidecar.lint.go_reading import is_gateway_duration, refused_as_bool, shown, yaml_true
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.timeouts import Budget, check_timeout, ms
from sidecar.lint.values import Json, as_dict, as_list, get_path, is_success_status, status_code

SECURITY_POLICY = "gateway-security-policy"
GATEWAY_DEFAULT_TIMEOUT = 10.0  # seconds
_REFUSED = "the API server refuses this SecurityPolicy, so it is not what Envoy Gateway runs"


def lint(
    data: Json, sidecar: SidecarSettings, context: GatewayContext | None = None
) -> tuple[set[str], list[Issue]]:
    document = as_dict(data)
    if document is None or not is_security_policy(document):
        return set(), []
    context = context or survey_gateway([document])
    ext_auth = as_dict(get_path(document, "spec", "extAuth"))
    if ext_auth is None:
        return {SECURITY_POLICY}, _replaced_gateway_policy(document, context)
    return {SECURITY_POLICY}, check_ext_auth(ext_auth, ("spec", "extAuth"), sidecar.budget)


def check_ext_auth(config: dict[str, Json], path: Pointer, budget: Budget) -> list[Issue]:
    """An Envoy Gateway ``ExtAuth`` (a SecurityPolicy's, or one copied into it)."""
    issues = _fail_open(config, path)
    issues += _timeout(config, path, budget)
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
    issues += _body(config, path)
    issues += _sent_headers(config, path)
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


def _fail_open(config: dict[str, Json], path: Pointer) -> list[Issue]:
    value = config.get("failOpen")
    if yaml_true(value):
        return [
            rules.GATEWAY_FAIL_OPEN.issue(
                (*path, "failOpen"),
                f"extAuth.failOpen: {shown(value)} (true to the API server) lets a request through "
                "whenever the check fails, and Envoy Gateway also drops the check when the extAuth "
                "configuration is invalid",
                "remove failOpen or set it to false (the default)",
            )
        ]
    if refused_as_bool(value):
        return [
            rules.NOT_VERIFIED.issue(
                (*path, "failOpen"),
                f"failOpen: {value!r} is not a bool: {_REFUSED}",
                "write failOpen: false, unquoted",
            )
        ]
    return []


def _timeout(config: dict[str, Json], path: Pointer, budget: Budget) -> list[Issue]:
    # Gateway API durations have no fractions: suggest whole milliseconds.
    suggestion = f"{round(budget.recommended_seconds * 1000)}ms"
    if "timeout" not in config:
        return [
            rules.GATEWAY_DEFAULT_TIMEOUT.issue(
                path,
                f"extAuth has no timeout, so Envoy Gateway sets {GATEWAY_DEFAULT_TIMEOUT:g} s: a hung "
                f"sidecar holds each request that long, while an answer never needs more than "
                f"{ms(budget.min_proxy_timeout)}",
                f"set timeout: {suggestion}",
            )
        ]
    raw = config["timeout"]
    if not is_gateway_duration(raw):
        return [
            rules.INVALID_TIMEOUT.issue(
                (*path, "timeout"),
                f"timeout {raw!r} is not a Gateway API duration (whole numbers of h, m, s or ms, such as "
                f"250ms): {_REFUSED}",
                f"write timeout: {suggestion}",
            )
        ]
    return check_timeout(
        raw, (*path, "timeout"), budget, field="timeout", proxy="Envoy", suggestion=suggestion
    )


def _body(config: dict[str, Json], path: Pointer) -> list[Issue]:
    if as_dict(config.get("bodyToExtAuth")) is None or as_dict(config.get("grpc")) is None:
        return []
    return [
        rules.BODY_AS_STRING.issue(
            (*path, "bodyToExtAuth"),
            "bodyToExtAuth with a gRPC service: Envoy Gateway sets no pack_as_bytes, so the body reaches the "
            "sidecar in the string field body, where Envoy replaces every byte of an invalid UTF-8 sequence "
            "with '!' (Envoy 1.40 turned a\\xffb into a!b while the upstream got a\\xffb): the policy "
            "reads a different body than the application",
            "use the sidecar's HTTP service (extAuth.http), which forwards the body as sent, or have the "
            "policy refuse bodies it needs byte-exact",
        )
    ]


def _sent_headers(config: dict[str, Json], path: Pointer) -> list[Issue]:
    """headersToExtAuth becomes Envoy's allowed_headers (exact names); unset, gRPC
    sends every header and HTTP only Host, method, path, Content-Length and
    Authorization."""
    listed = as_list(config.get("headersToExtAuth"))
    http_mode = as_dict(config.get("http")) is not None
    if not listed and not http_mode:
        return []
    names = {str(name).lower() for name in listed or []}
    missing = [name for name in CREDENTIAL_HEADERS if name not in names]
    if not missing:
        return []
    where: Pointer = (*path, "headersToExtAuth") if listed else path
    what = (
        "headersToExtAuth leaves out"
        if listed
        else (
            "no headersToExtAuth with an HTTP service: the check gets only Host, method, path, "
            "Content-Length and Authorization, not"
        )
    )
    return [
        rules.CREDENTIAL_HEADERS_NOT_SENT.issue(
            where,
            f"{what} {', '.join(missing)}: the backend gets these credentials but the policy never sees "
            "them, so it cannot refuse a second or a revoked one",
            "list every credential header the backend reads in headersToExtAuth, or (gRPC) leave "
            "headersToExtAuth out so every header is sent",
        )
    ]


def _replaced_gateway_policy(document: dict[str, Json], context: GatewayContext) -> list[Issue]:
    """A policy on a route without extAuth: unless it merges (mergeType), it
    replaces the Gateway's policy for that route, extAuth included."""
    spec = as_dict(document.get("spec")) or {}
    if spec.get("mergeType") is not None or not context.ext_auth_gateways:
        return []
    namespace = namespace_of(document)
    issues = []
    for position, ref in target_refs(spec):
        kind = ref.get("kind")
        if kind not in ROUTE_KINDS:
            continue
        where: Pointer = ("spec", "targetRefs", position) if position is not None else ("spec", "targetRef")
        route = f"{kind} {namespace}/{ref.get('name')}"
        parents = context.route_parents.get((namespace, str(kind), str(ref.get("name", ""))))
        if parents is None:
            gateways = ", ".join(f"{ns}/{name}" for ns, name in sorted(context.ext_auth_gateways))
            issues.append(
                rules.NOT_VERIFIED.issue(
                    where,
                    f"this SecurityPolicy has no extAuth and targets {route}, which is not among the files "
                    f"linted: if it attaches to a Gateway whose SecurityPolicy sets extAuth ({gateways}), "
                    "this policy replaces that one for the route and its requests are not checked",
                    "lint the route together with the policies, or add extAuth (or mergeType) here",
                )
            )
            continue
        for gateway in sorted(parents & set(context.ext_auth_gateways)):
            issues.append(
                rules.GATEWAY_ROUTE_POLICY_DROPS_EXT_AUTH.issue(
                    where,
                    f"this SecurityPolicy targets {route}, attached to Gateway {gateway[0]}/{gateway[1]}, "
                    f"whose SecurityPolicy {context.ext_auth_gateways[gateway]!r} sets extAuth. Envoy "
                    "Gateway applies the most specific policy only: for this route this one replaces the "
                    f"Gateway's, and it has no extAuth, so requests to {route} skip authorization",
                    "copy the extAuth settings into this policy, or set mergeType: StrategicMerge so it "
                    "merges with the Gateway's policy",
                )
            )
    return issues
