"""The Istio linter: ext_authz extension providers in a MeshConfig (plain, in
Helm values, in an IstioOperator or Sail ``Istio`` resource, or in the
``istio`` ConfigMap's ``mesh`` string) and AuthorizationPolicy resources."""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.lint import rules
from sidecar.lint.envoy_filter import CLIENT_HEADERS_FIX
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.timeouts import Budget, check_timeout, ms
from sidecar.lint.values import (
    Json,
    as_dict,
    as_list,
    get_path,
    is_success_status,
    is_true,
    istio_matcher,
    status_code,
)

MESH_CONFIG = "istio-mesh-config"
AUTHORIZATION_POLICY = "istio-authorization-policy"
ISTIO_DEFAULT_TIMEOUT = 600.0  # seconds, for both provider kinds
_PROVIDER_KINDS = ("envoyExtAuthzGrpc", "envoyExtAuthzHttp")
_MESH_LOCATIONS: tuple[Pointer, ...] = (
    (),
    ("meshConfig",),
    ("spec", "meshConfig"),
    ("spec", "values", "meshConfig"),
)
_EXEMPTING_SOURCES = ("notPrincipals", "notRequestPrincipals", "notNamespaces")
_DRY_RUN = "istio.io/dry-run"
_SHADOW_INSTEAD = (
    "to try a policy safely, run it as a shadow policy in the sidecar, which never changes the answer"
)


def lint(data: Json, sidecar: SidecarSettings) -> tuple[set[str], list[Issue]]:
    budget = sidecar.budget
    document = as_dict(data)
    if document is None:
        return set(), []
    kinds, issues = set(), []
    for base, mesh in _mesh_configs(document):
        kinds.add(MESH_CONFIG)
        for position, provider in enumerate(as_list(mesh.get("extensionProviders")) or []):
            for kind in _PROVIDER_KINDS:
                config = as_dict((as_dict(provider) or {}).get(kind))
                if config is not None:
                    name = (as_dict(provider) or {}).get("name", position)
                    path: Pointer = (*base, "extensionProviders", position, kind)
                    issues += _provider(config, path, f"provider {name!r}", kind, budget)
    if str(document.get("apiVersion", "")).startswith("security.istio.io/") and (
        document.get("kind") == "AuthorizationPolicy"
    ):
        kinds.add(AUTHORIZATION_POLICY)
        issues += _policy(document)
    return kinds, issues


def _mesh_configs(document: dict[str, Json]) -> Iterator[tuple[Pointer, dict[str, Json]]]:
    for base in _MESH_LOCATIONS:
        mesh = as_dict(get_path(document, *(str(part) for part in base)))
        if mesh is not None and isinstance(mesh.get("extensionProviders"), list):
            yield base, mesh


def _provider(config: dict[str, Json], path: Pointer, label: str, kind: str, budget: Budget) -> list[Issue]:
    issues = []
    if is_true(config.get("failOpen")):
        issues.append(
            rules.ISTIO_FAIL_OPEN.issue(
                (*path, "failOpen"),
                f"{label} has failOpen: true, which istiod turns into failure_mode_allow: a request is let "
                "through whenever the check fails (sidecar unreachable, timeout, gRPC error)",
                "remove failOpen or set it to false (the default)",
            )
        )
    if "timeout" in config:
        issues += check_timeout(config["timeout"], (*path, "timeout"), budget, field="timeout", proxy="Envoy")
    else:
        issues.append(
            rules.ISTIO_DEFAULT_TIMEOUT.issue(
                path,
                f"{label} has no timeout, so istiod programs {ISTIO_DEFAULT_TIMEOUT:g} s: a hung sidecar "
                f"holds every request for ten minutes, while an answer never needs more than "
                f"{ms(budget.min_proxy_timeout)}",
                f"set timeout: {budget.recommended}",
            )
        )
    issues += _status_on_error(config, path, label)
    if is_true(get_path(config, "includeRequestBodyInCheck", "allowPartialMessage")):
        issues.append(
            rules.PARTIAL_BODY.issue(
                (*path, "includeRequestBodyInCheck", "allowPartialMessage"),
                f"{label} sends only the first maxRequestBytes of a larger body: the policy sees a "
                "truncated body (input.truncated_body, header x-envoy-auth-partial-body: true)",
                "make the policy refuse or ignore a body when input.truncated_body is true, or set "
                "allowPartialMessage: false so larger bodies are refused with 413",
            )
        )
    if kind == "envoyExtAuthzHttp":
        issues += _http_headers(config, path, label)
    return issues


def _status_on_error(config: dict[str, Json], path: Pointer, label: str) -> list[Issue]:
    if "statusOnError" not in config:
        return [
            rules.STATUS_ON_ERROR_DEFAULT.issue(
                path,
                f"{label} has no statusOnError: when the sidecar cannot be reached Envoy answers 403, the "
                "same status as a policy denial",
                'set statusOnError: "503" so outages can be told apart from denials',
            )
        ]
    code = status_code(config["statusOnError"])
    if not is_success_status(code):
        return []
    return [
        rules.STATUS_ON_ERROR_2XX.issue(
            (*path, "statusOnError"),
            f"{label} answers failed checks with {code}, a success status: the request does not reach the "
            "upstream, but clients and monitors see success",
            'use a 5xx such as statusOnError: "503"',
        )
    ]


def _http_headers(config: dict[str, Json], path: Pointer, label: str) -> list[Issue]:
    issues = []
    listed = []
    for position, pattern in enumerate(as_list(config.get("headersToUpstreamOnAllow")) or []):
        matcher = istio_matcher(str(pattern))
        if matcher.matches_anything:
            issues.append(
                rules.UPSTREAM_HEADERS_MATCH_ALL.issue(
                    (*path, "headersToUpstreamOnAllow", position),
                    f"{label}: headersToUpstreamOnAllow entry {pattern!r} matches arbitrary header names: "
                    "any header of the authorization service's 200 reply is written onto the upstream "
                    "request, so which headers carry authorization results cannot be known, nor client "
                    "copies of them removed",
                    "list the exact headers the authorization service sets",
                )
            )
        else:
            listed.append(str(pattern))
    if listed:
        issues.append(
            rules.UPSTREAM_HEADER_UNVERIFIED.issue(
                (*path, "headersToUpstreamOnAllow"),
                f"{label}: {', '.join(listed)} are set from the authorization service's 200 reply, but when "
                "the reply does not set one, the client's own copy reaches the upstream; Istio does not "
                "remove client copies",
                "make the authorization service set (or list in x-envoy-auth-headers-to-remove) each of "
                "them on every allow, or remove client copies with an EnvoyFilter header_mutation placed "
                "before ext_authz",
            )
        )
    for field in ("headersToDownstreamOnDeny", "headersToDownstreamOnAllow"):
        for position, pattern in enumerate(as_list(config.get(field)) or []):
            if istio_matcher(str(pattern)).matches_anything:
                issues.append(
                    rules.CLIENT_HEADERS_MATCH_ALL.issue(
                        (*path, field, position),
                        f"{label}: {field} entry {pattern!r} matches arbitrary header names: the "
                        "authorization service's internal headers are passed to the client too",
                        CLIENT_HEADERS_FIX,
                    )
                )
    return issues


def _policy(document: dict[str, Json]) -> list[Issue]:
    spec = as_dict(document.get("spec")) or {}
    action = str(spec.get("action", "ALLOW"))
    issues = _dry_run(document, action)
    if action != "CUSTOM":
        return issues
    provider = get_path(spec, "provider", "name")
    label = f"provider {provider!r}" if isinstance(provider, str) else "its provider"
    rule_list = as_list(spec.get("rules")) or []
    if not rule_list:
        issues.append(
            rules.CUSTOM_POLICY_NO_RULES.issue(
                ("spec",),
                f"this CUSTOM policy has no rules, so it matches no request and nothing is sent to {label}",
                "add rules: [{}] to send every request of the selected workloads to the provider",
            )
        )
        return issues
    exemptions = [
        rules.CUSTOM_POLICY_EXEMPTS_IDENTITIES.issue(
            ("spec", "rules", r, "from", f, "source", key),
            f"callers matching {key} are exempted from this CUSTOM policy and skip the ext_authz check "
            "altogether (istio/istio#42162)",
            "send every caller to the provider and decide on identities in the policy "
            "(input.attributes.source.principal)",
        )
        for r, rule in enumerate(rule_list)
        for f, source in enumerate(as_list((as_dict(rule) or {}).get("from")) or [])
        for key in _EXEMPTING_SOURCES
        if key in (as_dict((as_dict(source) or {}).get("source")) or {})
    ]
    issues += exemptions
    scoped = any((as_dict(rule) or {}).get(part) for rule in rule_list for part in ("from", "to", "when"))
    if scoped and not exemptions:
        issues.append(
            rules.CUSTOM_POLICY_PARTIAL_SCOPE.issue(
                ("spec", "rules"),
                f"only requests matching these rules are sent to {label}; the others skip ext_authz and are "
                "allowed unless an ALLOW policy covers them (istio/istio#47219)",
                "pair it with an ALLOW policy for the same workloads, or use rules: [{}] and let the "
                "policy decide",
            )
        )
    return issues


def _dry_run(document: dict[str, Json], action: str) -> list[Issue]:
    annotations = as_dict(get_path(document, "metadata", "annotations")) or {}
    if not is_true(annotations.get(_DRY_RUN)) or action == "AUDIT":
        return []
    path: Pointer = ("metadata", "annotations", _DRY_RUN)
    fix = f"remove the {_DRY_RUN} annotation; {_SHADOW_INSTEAD}"
    if action == "DENY":
        return [
            rules.ISTIO_DRY_RUN_DENY.issue(
                path,
                "this DENY policy is in dry-run: Istio only logs what it would deny and lets it through",
                fix,
            )
        ]
    effect = (
        "Istio does not support dry-run for CUSTOM policies; what the proxy then does is not established"
        if action == "CUSTOM"
        else "Istio does not enforce it; if it is the workload's only ALLOW policy, every request is allowed"
    )
    return [rules.ISTIO_DRY_RUN.issue(path, f"this {action} policy is in dry-run: {effect}", fix)]
