"""The Envoy linter: bootstraps, listeners, xDS files, config dumps and Istio
EnvoyFilter patches, found by the ``@type`` of each typed config in the tree."""

from __future__ import annotations

from sidecar.lint.envoy_chain import check_hcm
from sidecar.lint.envoy_filter import check_http_ext_authz, check_network_ext_authz
from sidecar.lint.envoy_forwarded import check_forwarded_facts, listener_tls
from sidecar.lint.envoy_model import (
    EXT_AUTHZ_NAMES,
    HCM_TYPES,
    HTTP_EXT_AUTHZ_TYPES,
    NETWORK_EXT_AUTHZ_TYPES,
    http_filters,
)
from sidecar.lint.envoy_routes import check_per_route
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, typed

ENVOY = "envoy"  # a bootstrap or anything holding an HTTP connection manager
ENVOY_FRAGMENT = "envoy-fragment"  # ext_authz settings without their connection manager


def lint(data: Json, sidecar: SidecarSettings) -> tuple[set[str], list[Issue]]:
    budget = sidecar.budget
    issues: list[Issue] = []
    typed_nodes = [(path, unwrapped) for path, node in walk(data) if (unwrapped := typed(node)) is not None]

    in_chain: set[int] = set()
    ext_authz_names = set(EXT_AUTHZ_NAMES)
    has_hcm = False
    for path, (type_name, config, sub_path) in typed_nodes:
        if type_name in HCM_TYPES:
            has_hcm = True
            where = (*path, *sub_path)
            chain = check_hcm(config, where)
            issues += chain.issues + _forwarded_facts(data, config, where)
            in_chain |= chain.ext_authz_configs
            ext_authz_names |= chain.ext_authz_names

    has_ext_authz = False
    for path, (type_name, config, sub_path) in typed_nodes:
        where = (*path, *sub_path)
        if type_name in HTTP_EXT_AUTHZ_TYPES:
            has_ext_authz = True
            issues += check_http_ext_authz(config, where, sidecar, in_chain=id(config) in in_chain)
        elif type_name in NETWORK_EXT_AUTHZ_TYPES:
            has_ext_authz = True
            issues += check_network_ext_authz(config, where, budget)

    has_per_route, route_issues = check_per_route(data, ext_authz_names, sidecar)
    issues += route_issues

    root = as_dict(data) or {}
    if has_hcm or "static_resources" in root or "dynamic_resources" in root:
        return {ENVOY}, issues
    if has_ext_authz or has_per_route:
        return {ENVOY_FRAGMENT}, issues
    return set(), issues


def _forwarded_facts(data: Json, hcm: dict[str, Json], path: Pointer) -> list[Issue]:
    """Checked once per connection manager that runs ext_authz: the facts are the connection's."""
    filters = http_filters(hcm.get("http_filters"), (*path, "http_filters"))
    authz = next((f for f in filters if f.is_ext_authz), None)
    if authz is None:
        return []
    route_config = as_dict(hcm.get("route_config"))
    return check_forwarded_facts(hcm, path, filters, authz, route_config, tls=listener_tls(data, path))
