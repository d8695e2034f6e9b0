"""Per-route ext_authz settings, wherever a ``typed_per_filter_config`` appears
(an inline route table, an RDS file, an EnvoyFilter patch)."""

from __future__ import annotations

from collections.abc import Collection

from sidecar.lint import rules
from sidecar.lint.envoy_body_view import check_route_body
from sidecar.lint.envoy_filter import grpc_timeout
from sidecar.lint.envoy_model import FILTER_CONFIG_TYPE, PER_ROUTE_TYPES
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.timeouts import Budget, check_timeout
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, get_path, is_true, typed

_SCOPES = {
    "routes": "this route",
    "virtual_hosts": "every route of this virtual host",
    "clusters": "this weighted cluster",
}


def check_per_route(
    data: Json, ext_authz_names: Collection[str], sidecar: SidecarSettings
) -> tuple[bool, list[Issue]]:
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
            where: Pointer = (*path, name, *sub_path)
            if type_name in PER_ROUTE_TYPES:
                seen = True
                issues += _check_settings(config, where, sidecar)
            elif not (type_name == FILTER_CONFIG_TYPE and _is_ext_authz_name(str(name), ext_authz_names)):
                continue
            seen = True
            if is_true(config.get("disabled")):
                issues.append(_disabled(where, path[:-1]))
    return seen, issues


def _is_ext_authz_name(name: str, known: Collection[str]) -> bool:
    # Envoy Gateway names its filters envoy.filters.http.ext_authz/<policy>.
    return name in known or name.startswith("envoy.filters.http.ext_authz")


def _disabled(where: Pointer, holder: Pointer) -> Issue:
    scope = (
        _SCOPES.get(str(holder[-2]), "the whole route table") if len(holder) >= 2 else "the whole route table"
    )
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
