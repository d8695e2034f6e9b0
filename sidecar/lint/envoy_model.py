"""Recognising the pieces of an Envoy configuration the linter reasons about:
HTTP filters, the ext_authz filter (plain, behind a matcher, or from ECDS),
route tables and per-route filter configs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sidecar.lint.findings import Pointer
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, as_list, is_true, typed

HCM_TYPES = frozenset(
    {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager",
    }
)
HTTP_EXT_AUTHZ_TYPES = frozenset(
    {"envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", "envoy.config.filter.http.ext_authz.v2.ExtAuthz"}
)
NETWORK_EXT_AUTHZ_TYPES = frozenset(
    {
        "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
        "envoy.config.filter.network.ext_authz.v2.ExtAuthz",
    }
)
PER_ROUTE_TYPES = frozenset(
    {
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "envoy.config.filter.http.ext_authz.v2.ExtAuthzPerRoute",
    }
)
FILTER_CONFIG_TYPE = "envoy.config.route.v3.FilterConfig"
ROUTE_TYPE = "envoy.config.route.v3.Route"
ROUTE_CONFIGURATION_TYPE = "envoy.config.route.v3.RouteConfiguration"
ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"
WITH_MATCHER_TYPE = "envoy.extensions.common.matching.v3.ExtensionWithMatcher"
HEADER_MUTATION_TYPE = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
EARLY_HEADER_MUTATION_TYPE = "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"

# Well-known names; Envoy also accepts any name when typed_config says what the filter is.
EXT_AUTHZ_NAMES = frozenset({"envoy.filters.http.ext_authz", "envoy.ext_authz"})
ROUTER_NAMES = frozenset({"envoy.filters.http.router", "envoy.router"})

# Filters that can clear the route cache after ext_authz ran, so the request is
# routed again (Envoy's ext_authz docs, "Route cache clearing risk").
ROUTE_CACHE_CLEARING_PREFIXES = (
    "envoy.extensions.filters.http.lua.",
    "envoy.extensions.filters.http.ext_proc.",
    "envoy.extensions.filters.http.wasm.",
    "envoy.extensions.filters.http.golang.",
    "envoy.extensions.filters.http.dynamic_modules.",
)
ROUTE_CACHE_CLEARING_WHEN_ASKED = frozenset(
    {"envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", *HTTP_EXT_AUTHZ_TYPES}
)


@dataclass(frozen=True, slots=True)
class HttpFilter:
    """One entry of an HTTP connection manager's ``http_filters``."""

    index: int
    path: Pointer
    entry: dict[str, Json]
    type_name: str | None  # of the filter's own config (inside a matcher wrapper, the wrapped one)
    config: dict[str, Json] | None
    config_path: Pointer
    behind_matcher: bool
    from_ecds: bool
    discovery_types: tuple[str, ...] = ()  # ECDS: every type the server may send, and the default's

    @property
    def name(self) -> str:
        name = self.entry.get("name")
        return name if isinstance(name, str) else ""

    @property
    def is_ext_authz(self) -> bool:
        if self.type_name is not None:
            return self.type_name in HTTP_EXT_AUTHZ_TYPES
        return self.name in EXT_AUTHZ_NAMES

    @property
    def is_router(self) -> bool:
        return self.type_name == ROUTER_TYPE or (self.type_name is None and self.name in ROUTER_NAMES)

    @property
    def clears_route_cache(self) -> bool:
        if self.type_name is None:
            return False
        if self.type_name.startswith(ROUTE_CACHE_CLEARING_PREFIXES):
            return True
        return self.type_name in ROUTE_CACHE_CLEARING_WHEN_ASKED and is_true(
            (self.config or {}).get("clear_route_cache")
        )


def http_filters(filters: Json, path: Pointer) -> list[HttpFilter]:
    found = []
    for index, entry in enumerate(as_list(filters) or []):
        config = as_dict(entry)
        if config is not None:
            found.append(_http_filter(index, (*path, index), config))
    return found


def _http_filter(index: int, path: Pointer, entry: dict[str, Json]) -> HttpFilter:
    config_path: Pointer = (*path, "typed_config")
    unwrapped = typed(entry.get("typed_config"))
    behind_matcher = False
    if unwrapped is not None and unwrapped[0] == WITH_MATCHER_TYPE:
        inner_path: Pointer = (*config_path, *unwrapped[2], "extension_config", "typed_config")
        inner = typed((as_dict(unwrapped[1].get("extension_config")) or {}).get("typed_config"))
        behind_matcher, unwrapped, config_path = True, inner, inner_path
    if unwrapped is not None:
        type_name, config, sub_path = unwrapped
        return HttpFilter(
            index, path, entry, type_name, config, (*config_path, *sub_path), behind_matcher, False
        )
    discovery = as_dict(entry.get("config_discovery"))
    if discovery is None:
        return HttpFilter(index, path, entry, None, None, config_path, behind_matcher, False)
    types = [str(url).rsplit("/", 1)[-1] for url in as_list(discovery.get("type_urls")) or []]
    default = typed(discovery.get("default_config"))
    if default is not None:
        types.append(default[0])
    # Counted as ext_authz when the server may send one; the chain checks warn
    # about the other types it may send instead.
    ecds_type = next((t for t in types if t in HTTP_EXT_AUTHZ_TYPES), types[0] if types else None)
    return HttpFilter(
        index, path, entry, ecds_type, None, config_path, behind_matcher, True, tuple(dict.fromkeys(types))
    )


@dataclass(frozen=True, slots=True)
class RouteEntry:
    path: Pointer
    virtual_host: dict[str, Json]
    virtual_host_path: Pointer
    route: dict[str, Json]

    @property
    def action(self) -> str:
        for action in ("route", "redirect", "direct_response", "filter_action", "non_forwarding_action"):
            if action in self.route:
                return action
        return "route"


def routes(route_config: dict[str, Json], path: Pointer) -> Iterator[RouteEntry]:
    """Every route of a route table: those in ``routes`` and those a virtual
    host's ``matcher`` picks (each a Route in a typed action)."""
    for v_index, virtual_host in enumerate(as_list(route_config.get("virtual_hosts")) or []):
        vhost = as_dict(virtual_host)
        if vhost is None:
            continue
        vhost_path: Pointer = (*path, "virtual_hosts", v_index)
        for r_index, route in enumerate(as_list(vhost.get("routes")) or []):
            entry = as_dict(route)
            if entry is not None:
                yield RouteEntry((*vhost_path, "routes", r_index), vhost, vhost_path, entry)
        for where, node in walk(vhost.get("matcher"), (*vhost_path, "matcher")):
            unwrapped = typed(node)
            if unwrapped is not None and unwrapped[0] == ROUTE_TYPE:
                yield RouteEntry((*where, *unwrapped[2]), vhost, vhost_path, unwrapped[1])


@dataclass(frozen=True, slots=True)
class PerFilterConfig:
    """A ``typed_per_filter_config`` value for one filter."""

    path: Pointer
    type_name: str
    config: dict[str, Json]

    @property
    def disables(self) -> bool:
        if self.type_name == FILTER_CONFIG_TYPE or self.type_name in PER_ROUTE_TYPES:
            return is_true(self.config.get("disabled"))
        return False


def unwrap_filter_config(config: PerFilterConfig) -> PerFilterConfig | None:
    """The config a FilterConfig envelope carries (``config``), if any."""
    if config.type_name != FILTER_CONFIG_TYPE:
        return None
    inner = typed(config.config.get("config"))
    if inner is None:
        return None
    type_name, fields, sub_path = inner
    return PerFilterConfig((*config.path, "config", *sub_path), type_name, fields)


def per_filter_config(holder: dict[str, Json], holder_path: Pointer, name: str) -> PerFilterConfig | None:
    """The per-filter config of ``name`` on a route, virtual host or route
    table; a FilterConfig that only wraps another config counts as disabling
    when either says so."""
    configs = as_dict(holder.get("typed_per_filter_config")) or {}
    unwrapped = typed(configs.get(name))
    if unwrapped is None:
        return None
    type_name, config, sub_path = unwrapped
    found = PerFilterConfig((*holder_path, "typed_per_filter_config", name, *sub_path), type_name, config)
    inner = unwrap_filter_config(found)
    return inner if inner is not None and inner.disables and not found.disables else found


def effective_per_filter_config(
    route_config: dict[str, Json], route_config_path: Pointer, entry: RouteEntry, name: str
) -> PerFilterConfig | None:
    """The most specific per-filter config for a route: route, then virtual host, then route table."""
    return (
        per_filter_config(entry.route, entry.path, name)
        or per_filter_config(entry.virtual_host, entry.virtual_host_path, name)
        or per_filter_config(route_config, route_config_path, name)
    )
