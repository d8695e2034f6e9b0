"""Checks on an HTTP connection manager as a whole: is there an ext_authz
filter, does it run, does it run for every route and every upgrade, and can a
client forge the headers it sets."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.lint import rules
from sidecar.lint.envoy_before_authz import check_before_authz
from sidecar.lint.envoy_context import EnvoyContext
from sidecar.lint.envoy_discovery import check_discovered_filter, check_discovered_routes
from sidecar.lint.envoy_filter import REMOVE_CLIENT_COPIES, UPSTREAM_HEADER_FIELDS
from sidecar.lint.envoy_model import (
    EARLY_HEADER_MUTATION_TYPE,
    HEADER_MUTATION_TYPE,
    HttpFilter,
    PerFilterConfig,
    RouteEntry,
    effective_per_filter_config,
    http_filters,
    routes,
)
from sidecar.lint.envoy_paths import check_path_normalisation
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.tree import walk
from sidecar.lint.values import (
    Json,
    NameMatcher,
    as_dict,
    as_list,
    enum_name,
    envoy_matcher,
    envoy_matchers,
    get_path,
    is_false,
    is_true,
    typed,
)

_LOCAL_ACTIONS = frozenset({"direct_response", "redirect"})
# HeaderValueOption.append_action, in number order; the last two replace the client's value.
_APPEND_ACTIONS = (
    "APPEND_IF_EXISTS_OR_ADD",
    "ADD_IF_ABSENT",
    "OVERWRITE_IF_EXISTS_OR_ADD",
    "OVERWRITE_IF_EXISTS",
)
_OVERWRITES = frozenset({"OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"})
_ADD_FILTER = "add the envoy.filters.http.ext_authz filter to http_filters, before envoy.filters.http.router"


@dataclass
class ChainResult:
    issues: list[Issue] = field(default_factory=list)
    ext_authz_configs: set[int] = field(default_factory=set)  # ids of configs checked in context
    ext_authz_names: set[str] = field(default_factory=set)


def check_hcm(hcm: dict[str, Json], path: Pointer, context: EnvoyContext) -> ChainResult:
    result = ChainResult()
    filters = http_filters(hcm.get("http_filters"), (*path, "http_filters"))
    ext_authz = [f for f in filters if f.is_ext_authz]
    route_config = as_dict(hcm.get("route_config"))
    route_config_path: Pointer = (*path, "route_config")
    if not ext_authz:
        result.issues += _missing(hcm, path, route_config, route_config_path)
        return result
    result.issues += check_before_authz(filters, ext_authz[0])
    result.issues += check_discovered_routes(hcm, path, context)
    result.issues += check_path_normalisation(hcm, path)
    router = next((f.index for f in filters if f.is_router), None)
    for authz in ext_authz:
        result.issues += check_discovered_filter(authz)
        result.ext_authz_names.add(authz.name)
        if authz.config is not None:
            result.ext_authz_configs.add(id(authz.config))
            result.issues += _forgeable_headers(hcm, filters, authz, route_config)
        if router is not None and authz.index > router:
            result.issues.append(
                rules.EXT_AUTHZ_AFTER_ROUTER.issue(
                    authz.path,
                    "ext_authz comes after the router filter, which ends the chain: it would never run. "
                    "Envoy 1.40 refuses such a chain; sent over xDS, the update is rejected and Envoy "
                    "keeps its previous configuration",
                    "move ext_authz before envoy.filters.http.router (the router must be last)",
                )
            )
        if is_true(authz.entry.get("disabled")):
            result.issues += _disabled_by_default(authz, route_config, route_config_path)
        if is_true(authz.entry.get("is_optional")):
            result.issues.append(
                rules.EXT_AUTHZ_OPTIONAL.issue(
                    (*authz.path, "is_optional"),
                    "is_optional: true lets an Envoy build that lacks the ext_authz extension accept the "
                    "config and run without the filter",
                    "remove is_optional from the ext_authz filter",
                )
            )
        if authz.behind_matcher:
            result.issues.append(
                rules.EXT_AUTHZ_BEHIND_MATCHER.issue(
                    authz.path,
                    "ext_authz is wrapped in an ExtensionWithMatcher: requests for which the matcher picks "
                    "SkipFilter (or matches nothing) are not checked and are let through",
                    "use ext_authz without the matcher wrapper and let the policy decide what to allow",
                )
            )
    result.issues += _upgrades(hcm, path)
    result.issues += _route_cache(filters, ext_authz, route_config, route_config_path)
    return result


def _missing(
    hcm: dict[str, Json], path: Pointer, route_config: dict[str, Json] | None, route_config_path: Pointer
) -> list[Issue]:
    where: Pointer = (*path, "http_filters") if "http_filters" in hcm else path
    if route_config is None:
        source = next((key for key in ("rds", "scoped_routes") if key in hcm), None)
        if source is None:
            return []
        return [
            rules.MISSING_EXT_AUTHZ.issue(
                where,
                f"this HTTP connection manager takes its routes from {source} and has no ext_authz filter: "
                "no request it serves is authorized",
                _ADD_FILTER,
            )
        ]
    entries = list(routes(route_config, route_config_path))
    forwarding = [entry for entry in entries if entry.action not in _LOCAL_ACTIONS]
    if forwarding:
        return [
            rules.MISSING_EXT_AUTHZ.issue(
                where,
                f"this HTTP connection manager has no ext_authz filter, yet its routes send requests on "
                f"(first: {describe(forwarding[0])}): none of them is authorized",
                _ADD_FILTER,
            )
        ]
    if not entries:
        return []
    return [
        rules.MISSING_EXT_AUTHZ_LOCAL.issue(
            where,
            "this HTTP connection manager has no ext_authz filter; its routes only answer locally "
            "(direct_response or redirect), so no request reaches an upstream unchecked",
            "nothing to do if these answers are public; otherwise " + _ADD_FILTER,
        )
    ]


def describe(entry: RouteEntry) -> str:
    match = as_dict(entry.route.get("match")) or {}
    for key in ("prefix", "path", "path_separated_prefix"):
        if isinstance(match.get(key), str):
            return f"the route for {key} {match[key]!r}"
    regex = get_path(match, "safe_regex", "regex")
    if isinstance(regex, str):
        return f"the route for regex {regex!r}"
    name = entry.route.get("name")
    return f"route {name!r}" if isinstance(name, str) else "a route"


def _disabled_by_default(
    authz: HttpFilter, route_config: dict[str, Json] | None, route_config_path: Pointer
) -> list[Issue]:
    fix = (
        "remove disabled: true from the filter so it checks every route; do not rely on each route "
        "enabling it"
    )
    if route_config is None:
        return [
            rules.EXT_AUTHZ_DISABLED_BY_DEFAULT.issue(
                (*authz.path, "disabled"),
                "the ext_authz filter is disabled by default (disabled: true) and the routes come from "
                "RDS: every route that does not enable it is served without authorization",
                fix,
            )
        ]
    unchecked = [
        entry
        for entry in routes(route_config, route_config_path)
        if not _enables(effective_per_filter_config(route_config, route_config_path, entry, authz.name))
    ]
    if not unchecked:
        return []
    return [
        rules.EXT_AUTHZ_DISABLED_BY_DEFAULT.issue(
            (*authz.path, "disabled"),
            f"the ext_authz filter is disabled by default (disabled: true) and {len(unchecked)} route(s) do "
            f"not enable it (first: {describe(unchecked[0])}): they are served without authorization",
            fix,
        )
    ]


def _enables(config: PerFilterConfig | None) -> bool:
    return config is not None and not config.disables


def _upgrades(hcm: dict[str, Json], path: Pointer) -> list[Issue]:
    issues = []
    for position, upgrade in enumerate(as_list(hcm.get("upgrade_configs")) or []):
        config = as_dict(upgrade) or {}
        chain_path: Pointer = (*path, "upgrade_configs", position, "filters")
        chain = http_filters(config.get("filters"), chain_path)
        if not chain or is_false(config.get("enabled")):
            continue
        if any(f.is_ext_authz for f in chain):
            continue
        kind = config.get("upgrade_type", "upgrade")
        issues.append(
            rules.UPGRADE_WITHOUT_EXT_AUTHZ.issue(
                chain_path,
                f"the {kind} upgrade has its own filter chain without ext_authz: {kind} requests bypass "
                "authorization (Envoy 1.40 let a WebSocket upgrade through on such a listener while plain "
                "requests were denied)",
                "add the same ext_authz filter to this chain before the router, or drop the filters list so "
                "the main HTTP filter chain applies",
            )
        )
    return issues


def _route_cache(
    filters: list[HttpFilter],
    ext_authz: list[HttpFilter],
    route_config: dict[str, Json] | None,
    route_config_path: Pointer,
) -> list[Issue]:
    if route_config is None:
        return []
    issues = []
    for authz in ext_authz:
        skipping = is_true(authz.entry.get("disabled")) or any(
            (config := effective_per_filter_config(route_config, route_config_path, entry, authz.name))
            is not None
            and config.disables
            for entry in routes(route_config, route_config_path)
        )
        later = [f for f in filters if f.index > authz.index and f.clears_route_cache]
        if not skipping or not later:
            continue
        issues.append(
            rules.ROUTE_CACHE_CLEARED.issue(
                later[0].path,
                f"{later[0].name or later[0].type_name} runs after ext_authz and can clear the route cache, "
                "while some routes skip ext_authz: a request matched to such a route can be re-routed to a "
                "protected one without being checked",
                "place that filter before ext_authz, or stop disabling ext_authz per route",
            )
        )
    return issues


def _forgeable_headers(
    hcm: dict[str, Json],
    filters: list[HttpFilter],
    authz: HttpFilter,
    route_config: dict[str, Json] | None,
) -> list[Issue]:
    response_path: Pointer = (*authz.config_path, "http_service", "authorization_response")
    response = as_dict(get_path(authz.config, "http_service", "authorization_response"))
    if response is None:
        return []
    removed = removed_before(hcm, filters, authz, route_config)
    issues = []
    for field_name in UPSTREAM_HEADER_FIELDS:
        appended = field_name.endswith("_to_append")
        for position, matcher in envoy_matchers(response.get(field_name)):
            if matcher.matches_anything or any(r.covers(matcher) for r in removed):
                continue
            issues.append(
                rules.FORGEABLE_UPSTREAM_HEADER.issue(
                    (*response_path, field_name, "patterns", position),
                    f"{matcher} is set on the upstream request from the authorization service's 200 reply, "
                    f"but nothing removes the client's own {matcher} first: when the reply does not set it, "
                    "the client's value reaches the upstream"
                    + (
                        " (and with _to_append the service's value is only added after the client's)"
                        if appended
                        else ""
                    ),
                    REMOVE_CLIENT_COPIES,
                )
            )
    return issues


def removed_before(
    hcm: dict[str, Json], filters: list[HttpFilter], authz: HttpFilter, route_config: dict[str, Json] | None
) -> list[NameMatcher]:
    """Header names whose client values are cleared (removed or overwritten)
    before ``authz`` runs."""
    removed = [
        NameMatcher("exact", name)
        for name in as_list((route_config or {}).get("internal_only_headers")) or []
        if isinstance(name, str)
    ]
    for extension in as_list(hcm.get("early_header_mutation_extensions")) or []:
        unwrapped = typed((as_dict(extension) or {}).get("typed_config"))
        if unwrapped is not None and unwrapped[0] == EARLY_HEADER_MUTATION_TYPE:
            removed += _removals(unwrapped[1].get("mutations"))
    for earlier in filters[: authz.index]:
        if earlier.type_name == HEADER_MUTATION_TYPE and _runs_for_every_request(earlier, route_config):
            removed += _removals(get_path(earlier.config, "mutations", "request_mutations"))
    return removed


def _runs_for_every_request(mutation: HttpFilter, route_config: dict[str, Json] | None) -> bool:
    """A filter disabled by default, behind a matcher, or disabled on some route
    removes headers for some requests only."""
    if is_true(mutation.entry.get("disabled")) or mutation.behind_matcher:
        return False
    for where, node in walk(route_config):
        if where and where[-1] == "typed_per_filter_config" and isinstance(node, dict):
            override = typed(node.get(mutation.name))
            if override is not None and is_true(override[1].get("disabled")):
                return False
    return True


def _removals(mutations: Json) -> list[NameMatcher]:
    found = []
    for mutation in as_list(mutations) or []:
        config = as_dict(mutation) or {}
        if isinstance(config.get("remove"), str):
            found.append(NameMatcher("exact", config["remove"]))  # type: ignore[arg-type]
        matcher = envoy_matcher(get_path(config, "remove_on_match", "key_matcher"))
        if matcher is not None:
            found.append(matcher)
        overwritten = get_path(config, "append", "header", "key")
        action = enum_name(get_path(config, "append", "append_action") or 0, _APPEND_ACTIONS)
        if isinstance(overwritten, str) and action in _OVERWRITES:
            found.append(NameMatcher("exact", overwritten))
    return found
