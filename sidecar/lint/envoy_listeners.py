"""Listeners as a whole: every filter chain (the listed ones, those picked by
``filter_chain_match`` or a ``filter_chain_matcher``, and the default chain)
either runs an HTTP connection manager, which ``envoy_chain`` checks, or is
checked here: a chain that passes connections on without ext_authz lets every
request through, and a chain the linter cannot read is reported as such."""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.lint import rules
from sidecar.lint.envoy_model import HCM_TYPES, NETWORK_EXT_AUTHZ_TYPES
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, as_list, get_path, typed

TCP_PROXY_TYPE = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
# Network filters that only ever answer locally.
_LOCAL_TYPES = frozenset(
    {
        "envoy.extensions.filters.network.direct_response.v3.Config",
        "envoy.extensions.filters.network.echo.v3.Echo",
    }
)


def listeners(data: Json) -> Iterator[tuple[Pointer, dict[str, Json]]]:
    """Every listener in a document: whatever has filter chains."""
    for path, node in walk(data):
        if isinstance(node, dict) and (
            isinstance(node.get("filter_chains"), list) or isinstance(node.get("default_filter_chain"), dict)
        ):
            yield path, node


def filter_chains(listener: dict[str, Json], path: Pointer) -> Iterator[tuple[Pointer, dict[str, Json], str]]:
    """(pointer, chain, how it is described) for each chain of a listener."""
    for position, chain in enumerate(as_list(listener.get("filter_chains")) or []):
        config = as_dict(chain)
        if config is not None:
            name = config.get("name")
            label = f"filter chain {name!r}" if isinstance(name, str) else f"filter chain {position}"
            yield (*path, "filter_chains", position), config, label
    default = as_dict(listener.get("default_filter_chain"))
    if default is not None:
        yield (*path, "default_filter_chain"), default, "the default filter chain"


def check_listener(listener: dict[str, Json], path: Pointer) -> list[Issue]:
    issues = []
    for chain_path, chain, label in filter_chains(listener, path):
        filters = [as_dict(f) or {} for f in as_list(chain.get("filters")) or []]
        types = [_type_of(f) for f in filters]
        if any(t in HCM_TYPES or t in NETWORK_EXT_AUTHZ_TYPES for t in types):
            continue  # checked as HTTP (envoy_chain), or authorized per connection
        if types and all(t in _LOCAL_TYPES for t in types):
            continue
        where: Pointer = (*chain_path, "filters")
        picked = _picked_by(chain)
        if TCP_PROXY_TYPE in types:
            cluster = get_path(filters[types.index(TCP_PROXY_TYPE)], "typed_config", "cluster")
            target = f" to cluster {cluster!r}" if isinstance(cluster, str) else ""
            issues.append(
                rules.MISSING_EXT_AUTHZ.issue(
                    where,
                    f"{label}{picked} passes connections on{target} with tcp_proxy and no ext_authz: every "
                    "request on it reaches the upstream unchecked",
                    "remove this chain, or give it an HTTP connection manager with ext_authz (or a network "
                    "ext_authz filter before tcp_proxy)",
                )
            )
            continue
        unknown = [t or str(f.get("name", "?")) for f, t in zip(filters, types, strict=True)]
        issues.append(
            rules.NOT_VERIFIED.issue(
                where,
                f"{label}{picked} runs {', '.join(unknown) or 'no filters'}: neither an HTTP connection "
                "manager nor ext_authz, and the linter cannot tell whether it lets requests through",
                "check this chain by hand; if it forwards, put ext_authz in front",
            )
        )
    return issues


def _type_of(entry: dict[str, Json]) -> str | None:
    unwrapped = typed(entry.get("typed_config"))
    return unwrapped[0] if unwrapped is not None else None


def _picked_by(chain: dict[str, Json]) -> str:
    match = as_dict(chain.get("filter_chain_match")) or {}
    facts = [key for key in ("application_protocols", "transport_protocol", "server_names") if key in match]
    return f" (picked by {', '.join(facts)})" if facts else ""


def check_dynamic_listeners(root: dict[str, Json]) -> list[Issue]:
    dynamic = as_dict(root.get("dynamic_resources")) or {}
    source = next((key for key in ("lds_config", "lds_resources_locator") if key in dynamic), None)
    if source is None:
        return []
    return [
        rules.NOT_VERIFIED.issue(
            ("dynamic_resources", source),
            "listeners come from LDS: the listeners, filter chains and routes the server sends are not in "
            "this file and are not verified",
            "lint what the server sends (its listener and route resources, or a config dump) with this file",
        )
    ]
