"""The Istio linter: ext_authz extension providers in a MeshConfig (plain, in
Helm values, in an IstioOperator or Sail ``Istio`` resource, or in the
``istio`` ConfigMap's ``mesh`` string), AuthorizationPolicy resources
(``istio_policy``) and EnvoyFilter patches (``istio_envoy_filter``).

A mesh config is read as istiod reads it (``go_reading``): fields in either
spelling, the JSON name winning; YAML 1.1 booleans; a value istiod cannot read
makes it refuse the whole mesh config and keep the last one it read."""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.lint import rules
from sidecar.lint.envoy_body_view import check_body
from sidecar.lint.envoy_filter import CLIENT_HEADERS_FIX
from sidecar.lint.envoy_sent_headers import CREDENTIAL_HEADERS
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.go_reading import ProtoFields, proto_fields, refused_as_bool, shown, yaml_true
from sidecar.lint.istio_context import IstioContext, is_authorization_policy, survey_istio
from sidecar.lint.istio_envoy_filter import ENVOY_FILTER, check_envoy_filter, is_envoy_filter
from sidecar.lint.istio_policy import AUTHORIZATION_POLICY, check_policy
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.timeouts import Budget, check_timeout, ms
from sidecar.lint.values import Json, as_dict, as_list, get_path, is_success_status, istio_matcher

MESH_CONFIG = "istio-mesh-config"
ISTIO_DEFAULT_TIMEOUT = 600.0  # seconds, for both provider kinds
_PROVIDER_KINDS = ("envoyExtAuthzGrpc", "envoyExtAuthzHttp")
_MESH_LOCATIONS: tuple[Pointer, ...] = (
    (),
    ("meshConfig",),
    ("spec", "meshConfig"),
    ("spec", "values", "meshConfig"),
)
_UNREAD = (
    "istiod cannot read the mesh config that holds it: it refuses the whole mesh config and keeps the last "
    "one it read (or its defaults), which the linter cannot see"
)


def lint(
    data: Json, sidecar: SidecarSettings, context: IstioContext | None = None
) -> tuple[set[str], list[Issue]]:
    """``context``: the AuthorizationPolicies linted together; this document alone when not given."""
    document = as_dict(data)
    if document is None:
        return set(), []
    kinds, issues = set(), []
    for base, mesh in _mesh_configs(document):
        kinds.add(MESH_CONFIG)
        providers_key = mesh.key("extensionProviders")
        issues += _both_ways(mesh, base)
        for position, raw in enumerate(as_list(mesh.get("extensionProviders")) or []):
            provider = proto_fields(as_dict(raw) or {})
            path: Pointer = (*base, providers_key, position)
            issues += _both_ways(provider, path)
            for kind in _PROVIDER_KINDS:
                config = as_dict(provider.get(kind))
                if config is not None:
                    name = provider.get("name")
                    label = f"provider {name if isinstance(name, str) else position!r}"
                    issues += _provider(
                        proto_fields(config), (*path, provider.key(kind)), label, kind, sidecar
                    )
    if is_authorization_policy(document):
        kinds.add(AUTHORIZATION_POLICY)
        issues += check_policy(document, context or survey_istio([document]))
    if is_envoy_filter(document):
        kinds.add(ENVOY_FILTER)
        issues += check_envoy_filter(document, sidecar)
    return kinds, issues


def _mesh_configs(document: dict[str, Json]) -> Iterator[tuple[Pointer, ProtoFields]]:
    for base in _MESH_LOCATIONS:
        found = as_dict(get_path(document, *(str(part) for part in base)))
        if found is None:
            continue
        mesh = proto_fields(found)
        if isinstance(mesh.get("extensionProviders"), list):
            yield base, mesh


def _both_ways(fields: ProtoFields, path: Pointer) -> list[Issue]:
    return [
        rules.DUPLICATE_KEY.issue(
            (*path, unused),
            f"{unused} and {used} are the same field to istiod, set twice: istiod reads the JSON name "
            f"{used} and ignores {unused}, whatever the order",
            "keep a single entry",
        )
        for unused, used in fields.both_ways
    ]


def _provider(
    config: ProtoFields, path: Pointer, label: str, kind: str, sidecar: SidecarSettings
) -> list[Issue]:
    issues = _both_ways(config, path)
    fail_open = config.get("failOpen")
    if yaml_true(fail_open):
        issues.append(
            rules.ISTIO_FAIL_OPEN.issue(
                (*path, config.key("failOpen")),
                f"{label} has failOpen: {shown(fail_open)}, which istiod reads as true and turns into "
                "failure_mode_allow: a request is let through whenever the check fails (sidecar unreachable, "
                "timeout, gRPC error)",
                "remove failOpen or set it to false (the default)",
            )
        )
    elif refused_as_bool(fail_open):
        issues.append(
            _unreadable(path, config.key("failOpen"), fail_open, "a bool (true or false, unquoted)")
        )
    issues += _timeout(config, path, label, sidecar.budget)
    issues += _status_on_error(config, path, label)
    issues += _body(config, path, label, kind, sidecar)
    if kind == "envoyExtAuthzHttp":
        issues += _http_headers(config, path, label)
    return issues


def _unreadable(path: Pointer, key: str, value: Json, expected: str) -> Issue:
    return rules.NOT_VERIFIED.issue(
        (*path, key),
        f"{key}: {value!r} is not {expected}: {_UNREAD}",
        f"write {key} as {expected}",
    )


def _timeout(config: ProtoFields, path: Pointer, label: str, budget: Budget) -> list[Issue]:
    if "timeout" not in config:
        return [
            rules.ISTIO_DEFAULT_TIMEOUT.issue(
                path,
                f"{label} has no timeout, so istiod programs {ISTIO_DEFAULT_TIMEOUT:g} s: a hung sidecar "
                f"holds every request for ten minutes, while an answer never needs more than "
                f"{ms(budget.min_proxy_timeout)}",
                f"set timeout: {budget.recommended}",
            )
        ]
    raw = config.get("timeout")
    if not isinstance(raw, str):  # jsonpb reads a Duration from a JSON string only
        return [_unreadable(path, config.key("timeout"), raw, 'a duration string such as "0.25s"')]
    return check_timeout(raw, (*path, config.key("timeout")), budget, field="timeout", proxy="Envoy")


def _status_on_error(config: ProtoFields, path: Pointer, label: str) -> list[Issue]:
    if "statusOnError" not in config:
        return [
            rules.STATUS_ON_ERROR_DEFAULT.issue(
                path,
                f"{label} has no statusOnError: when the sidecar cannot be reached Envoy answers 403, the "
                "same status as a policy denial",
                'set statusOnError: "503" so outages can be told apart from denials',
            )
        ]
    raw = config.get("statusOnError")
    if not isinstance(raw, str):  # a string field: jsonpb refuses a number
        return [_unreadable(path, config.key("statusOnError"), raw, 'a quoted status such as "503"')]
    code = int(raw) if raw.isdigit() else None
    if not is_success_status(code):
        return []  # istiod refuses a provider whose status is not a number: CUSTOM policies then deny all
    return [
        rules.STATUS_ON_ERROR_2XX.issue(
            (*path, config.key("statusOnError")),
            f"{label} answers failed checks with {code}, a success status: the request does not reach the "
            "upstream, but clients and monitors see success",
            'use a 5xx such as statusOnError: "503"',
        )
    ]


def _body(config: ProtoFields, path: Pointer, label: str, kind: str, sidecar: SidecarSettings) -> list[Issue]:
    raw = as_dict(config.get("includeRequestBodyInCheck"))
    if raw is None:
        return []
    body = proto_fields(raw)
    where: Pointer = (*path, config.key("includeRequestBodyInCheck"))
    issues = _both_ways(body, where)
    if yaml_true(body.get("allowPartialMessage")):
        issues.append(
            rules.PARTIAL_BODY.issue(
                (*where, body.key("allowPartialMessage")),
                f"{label} sends only the first maxRequestBytes of a larger body: the policy sees a "
                "truncated body (input.truncated_body, header x-envoy-auth-partial-body: true)",
                "make the policy refuse or ignore a body when input.truncated_body is true, or set "
                "allowPartialMessage: false so larger bodies are refused with 413",
            )
        )
    # istiod copies the three settings into Envoy's BufferSettings unchanged.
    buffer: dict[str, Json] = {"allow_partial_message": yaml_true(body.get("allowPartialMessage"))}
    if "maxRequestBytes" in body:
        buffer["max_request_bytes"] = body.get("maxRequestBytes")
    if "packAsBytes" in body:
        buffer["pack_as_bytes"] = yaml_true(body.get("packAsBytes"))
    envoy_keys = {
        "max_request_bytes": body.key("maxRequestBytes"),
        "pack_as_bytes": body.key("packAsBytes"),
    }
    for issue in check_body(buffer, where, sidecar.envoy_max_request_bytes, grpc=kind == "envoyExtAuthzGrpc"):
        tail = issue.path[len(where) :]
        spelled = (*where, envoy_keys[str(tail[0])]) if tail else where
        fix = issue.fix.replace("with_request_body.pack_as_bytes", "includeRequestBodyInCheck.packAsBytes")
        fix = fix.replace("max_request_bytes:", "maxRequestBytes:")
        issues.append(issue.rule.issue(spelled, issue.message, fix))
    return issues


def _http_headers(config: ProtoFields, path: Pointer, label: str) -> list[Issue]:
    issues = _sent_headers(config, path, label)
    listed = []
    key = config.key("headersToUpstreamOnAllow")
    for position, pattern in _patterns(config.get("headersToUpstreamOnAllow")):
        matcher = istio_matcher(pattern)
        if matcher.matches_anything:
            issues.append(
                rules.UPSTREAM_HEADERS_MATCH_ALL.issue(
                    (*path, key, position),
                    f"{label}: headersToUpstreamOnAllow entry {pattern!r} matches arbitrary header names: "
                    "any header of the authorization service's 200 reply is written onto the upstream "
                    "request, so which headers carry authorization results cannot be known, nor client "
                    "copies of them removed",
                    "list the exact headers the authorization service sets",
                )
            )
        else:
            listed.append(pattern)
    if listed:
        issues.append(
            rules.UPSTREAM_HEADER_UNVERIFIED.issue(
                (*path, key),
                f"{label}: {', '.join(listed)} are set from the authorization service's 200 reply, but when "
                "the reply does not set one, the client's own copy reaches the upstream; Istio does not "
                "remove client copies",
                "make the authorization service set (or list in x-envoy-auth-headers-to-remove) each of "
                "them on every allow, or remove client copies with an EnvoyFilter header_mutation placed "
                "before ext_authz",
            )
        )
    for field in ("headersToDownstreamOnDeny", "headersToDownstreamOnAllow"):
        for position, pattern in _patterns(config.get(field)):
            if istio_matcher(pattern).matches_anything:
                issues.append(
                    rules.CLIENT_HEADERS_MATCH_ALL.issue(
                        (*path, config.key(field), position),
                        f"{label}: {field} entry {pattern!r} matches arbitrary header names: the "
                        "authorization service's internal headers are passed to the client too",
                        CLIENT_HEADERS_FIX,
                    )
                )
    return issues


def _sent_headers(config: ProtoFields, path: Pointer, label: str) -> list[Issue]:
    """istiod sends the headers includeRequestHeadersInCheck lists (the deprecated
    includeHeadersInCheck when it is unset); with neither, Envoy's HTTP mode sends
    Host, method, path, Content-Length and Authorization only."""
    field = next(
        (f for f in ("includeRequestHeadersInCheck", "includeHeadersInCheck") if as_list(config.get(f))), None
    )
    matchers = [istio_matcher(pattern) for _, pattern in _patterns(config.get(field) if field else None)]
    missing = [name for name in CREDENTIAL_HEADERS if not any(m.matches(name) for m in matchers)]
    if not missing:
        return []
    listed = f"{field} leaves out" if field else "no includeRequestHeadersInCheck: the check gets only Host, "
    listed += "" if field else "method, path, Content-Length and Authorization, not"
    return [
        rules.CREDENTIAL_HEADERS_NOT_SENT.issue(
            (*path, config.key(field)) if field else path,
            f"{label}: {listed} {', '.join(missing)}: the upstream gets these credentials but the policy "
            "never sees them, so it cannot refuse a second or a revoked one",
            "list every header the application reads as a credential in includeRequestHeadersInCheck "
            '(prefix patterns such as "x-*" are allowed), or use the gRPC provider, which sends every header',
        )
    ]


def _patterns(value: Json) -> list[tuple[int, str]]:
    """Header patterns with their positions. istiod refuses a provider with a
    lone "*" (CUSTOM policies naming it then deny every request), so that entry
    matches nothing."""
    return [(position, str(p)) for position, p in enumerate(as_list(value) or []) if str(p) != "*"]
