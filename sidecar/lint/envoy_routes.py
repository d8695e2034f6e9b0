"""Per-route ext_authz settings, wherever a ``typed_per_filter_config`` appears
(an inline route table, an RDS file, an EnvoyFilter patch)."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.envoy_body_view import check_route_body
from sidecar.lint.envoy_context import EnvoyContext
from sidecar.lint.envoy_filter import grpc_timeout
from sidecar.lint.envoy_model import EXT_AUTHZ_NAMES, PER_ROUTE_TYPES, PerFilterConfig, unwrap_filter_config
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.timeouts import Budget, check_timeout
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, get_path, typed

_SCOPES = {
    "routes": "this route",
    "virtual_hosts": "every route of this virtual host",
    "clusters": "this weighted cluster",
}


def check_per_route(data: Json, context: EnvoyContext, sidecar: SidecarSettings) -> tuple[bool, list[Issue]]:
    """(whether any per-route ext_authz config was seen, findings)."""
    seen, issues = False, []
    for path, node in walk(data):
        if not path or path[-1] != "typed_per_filter_config" or not isinstance(node, dict):
            continue
        for name, value in node.items():
            unwrapped = typed(value)
            if unwrapped is None:
                continue
            type_name, config, sub_path = unwrapped
            found = PerFilterConfig((*path, name, *sub_path), type_name, config)
            inner = unwrap_filter_config(found)
            per_route = next(
                (c for c in (found, inner) if c is not None and c.type_name in PER_ROUTE_TYPES), None
            )
            if per_route is None and not _names_ext_authz(str(name), context):
                continue
            seen = True
            if context.connection_managers and not _names_ext_authz(str(name), context):
                issues.append(_ignored(found.path, str(name), context))
                continue
            if per_route is not None:
                issues += _check_settings(per_route.config, per_route.path, sidecar)
            disabling = next((c for c in (found, inner) if c is not None and c.disables), None)
            if disabling is not None:
                issues.append(_disabled(disabling.path, path[:-1]))
    return seen, issues


def _names_ext_authz(name: str, context: EnvoyContext) -> bool:
    """Whether Envoy hands a per-filter config of this name to an ext_authz
    filter. Given no connection manager, any name ext_authz is known by;
    Envoy Gateway names its filters envoy.filters.http.ext_authz/<policy>."""
    if context.connection_managers:
        return name in context.ext_authz_names
    return name in EXT_AUTHZ_NAMES or name.startswith("envoy.filters.http.ext_authz")


def _ignored(where: Pointer, name: str, context: EnvoyContext) -> Issue:
    known = ", ".join(sorted(context.ext_authz_names)) or "none"
    return rules.PER_ROUTE_IGNORED.issue(
        where,
        f"no ext_authz filter is named {name!r} in the connection managers linted (ext_authz filters: "
        f"{known}): Envoy hands this per-route config to no ext_authz filter, so it does nothing",
        "remove it, or key it by the name of the ext_authz filter it is meant for",
    )


def _disabled(where: Pointer, holder: Pointer) -> Issue:
    if holder and holder[-1] == "typed_config":  # a Route picked by a virtual host's matcher
        scope = "this route"
    elif len(holder) >= 2:
        scope = _SCOPES.get(str(holder[-2]), "the whole route table")
    else:
        scope = "the whole route table"
    return rules.PER_ROUTE_DISABLED.issue(
        (*where, "disabled"),
        f"ext_authz is disabled for {scope}: those requests are let through without a check. "
        "deny_at_disable does not cover this (it applies to filter_enabled); Envoy 1.40 let such a route "
        "through with deny_at_disable: true",
        "remove the override. If a path must stay open (a health check), let the policy allow it, or serve "
        "it from a listener that only answers locally, and record the exception as a waiver",
    )


def _check_settings(config: dict[str, Json], where: Pointer, sidecar: SidecarSettings) -> list[Issue]:
    settings = as_dict(config.get("check_settings")) or {}
    body = check_route_body(settings, (*where, "check_settings"), sidecar.envoy_max_request_bytes)
    return body + _service_override(settings, where, sidecar.budget)


def _service_override(settings: dict[str, Json], where: Pointer, budget: Budget) -> list[Issue]:
    grpc_service = as_dict(settings.get("grpc_service"))
    if grpc_service is not None:
        return grpc_timeout(grpc_service, (*where, "check_settings", "grpc_service"), budget)
    timeout = get_path(settings, "http_service", "server_uri", "timeout")
    if timeout is not None:
        path = (*where, "check_settings", "http_service", "server_uri", "timeout")
        return check_timeout(timeout, path, budget, field="timeout", proxy="Envoy")
    return []
