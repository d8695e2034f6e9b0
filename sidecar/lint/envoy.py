"""The Envoy linter: bootstraps, listeners, xDS files, config dumps and Istio
EnvoyFilter patches, found by the ``@type`` of each typed config in the tree.

The document is first read in one spelling (``envoy_canonical``); findings
point at the keys as written."""

from __future__ import annotations

from dataclasses import replace

from sidecar.lint import rules
from sidecar.lint.envoy_canonical import Canonical, canonical
from sidecar.lint.envoy_chain import check_hcm
from sidecar.lint.envoy_context import EnvoyContext, survey
from sidecar.lint.envoy_ext_proc import EXT_PROC_TYPES, check_ext_proc
from sidecar.lint.envoy_filter import check_http_ext_authz, check_network_ext_authz
from sidecar.lint.envoy_forwarded import check_forwarded_facts, listener_tls
from sidecar.lint.envoy_listeners import check_dynamic_listeners, check_listener, listeners
from sidecar.lint.envoy_model import (
    HCM_TYPES,
    HTTP_EXT_AUTHZ_TYPES,
    NETWORK_EXT_AUTHZ_TYPES,
    ROUTE_CONFIGURATION_TYPE,
    http_filters,
)
from sidecar.lint.envoy_routes import check_per_route
from sidecar.lint.envoy_runtime import check_runtime, read_runtime
from sidecar.lint.envoy_tls import DOWNSTREAM_TLS_TYPES, check_downstream_tls
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, typed

ENVOY = "envoy"  # a bootstrap or anything holding an HTTP connection manager
ENVOY_FRAGMENT = "envoy-fragment"  # ext_authz settings without their connection manager


def lint(
    data: Json, sidecar: SidecarSettings, context: EnvoyContext | None = None
) -> tuple[set[str], list[Issue]]:
    """``context``: what the other files linted together say (RDS route tables,
    ext_authz filter names); this document alone when not given."""
    if str((as_dict(data) or {}).get("apiVersion", "")).startswith("networking.istio.io/"):
        return set(), []  # the Istio linter lints each EnvoyFilter patch value as istiod applies it
    read = canonical(data)
    kinds, issues = _lint(read.data, sidecar, context or survey([data]))
    if not kinds:
        return kinds, []
    return kinds, [replace(issue, path=read.written(issue.path)) for issue in issues] + _collisions(read)


def _lint(data: Json, sidecar: SidecarSettings, context: EnvoyContext) -> tuple[set[str], list[Issue]]:
    budget = sidecar.budget
    issues: list[Issue] = []
    typed_nodes = [(path, unwrapped) for path, node in walk(data) if (unwrapped := typed(node)) is not None]
    root = as_dict(data)
    runtime = read_runtime(root)

    in_chain: set[int] = set()
    has_hcm = False
    for path, (type_name, config, sub_path) in typed_nodes:
        if type_name in HCM_TYPES:
            has_hcm = True
            where = (*path, *sub_path)
            chain = check_hcm(config, where, context)
            issues += chain.issues + _forwarded_facts(data, config, where)
            in_chain |= chain.ext_authz_configs

    has_ext_authz = False
    for path, (type_name, config, sub_path) in typed_nodes:
        where = (*path, *sub_path)
        if type_name in HTTP_EXT_AUTHZ_TYPES:
            has_ext_authz = True
            issues += check_http_ext_authz(config, where, sidecar, in_chain=id(config) in in_chain)
            issues += check_runtime(config, where, runtime)
        elif type_name in NETWORK_EXT_AUTHZ_TYPES:
            has_ext_authz = True
            issues += check_network_ext_authz(config, where, budget)
        elif type_name in DOWNSTREAM_TLS_TYPES:
            issues += check_downstream_tls(config, where)
        elif type_name in EXT_PROC_TYPES:
            issues += check_ext_proc(config, where)

    for path, listener in listeners(data):
        issues += check_listener(listener, path)

    has_per_route, route_issues = check_per_route(data, context, sidecar)
    issues += route_issues

    if has_hcm or (root is not None and ("static_resources" in root or "dynamic_resources" in root)):
        return {ENVOY}, issues + check_dynamic_listeners(root or {})
    route_tables = any(type_name == ROUTE_CONFIGURATION_TYPE for _, (type_name, _, _) in typed_nodes)
    if has_ext_authz or has_per_route or route_tables:
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


def _collisions(read: Canonical) -> list[Issue]:
    return [
        rules.DUPLICATE_KEY.issue(
            (*read.written(collision.path[:-1]), collision.spellings[1]),
            f"{collision.spellings[0]} and {collision.spellings[1]} are the same field to Envoy, set twice "
            "in this mapping: which one Envoy 1.40 keeps depends on the field, not on the order written",
            "keep a single entry",
        )
        for collision in read.collisions
    ]
