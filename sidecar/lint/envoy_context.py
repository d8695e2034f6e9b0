"""What the Envoy files linted together say about each other: a route table in
one file is read by a connection manager in another (RDS), by the name of the
ext_authz filter there. Surveyed over every document before any is linted."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sidecar.lint.envoy_canonical import canonical
from sidecar.lint.envoy_model import HCM_TYPES, ROUTE_CONFIGURATION_TYPE, http_filters
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, typed


@dataclass(frozen=True, slots=True)
class EnvoyContext:
    ext_authz_names: frozenset[str] = frozenset()  # ext_authz filter names in any connection manager
    route_tables: frozenset[str] = frozenset()  # names of the RouteConfiguration resources given
    connection_managers: int = 0


def survey(documents: Iterable[Json]) -> EnvoyContext:
    names: set[str] = set()
    tables: set[str] = set()
    managers = 0
    for document in documents:
        for _, node in walk(canonical(document).data):
            unwrapped = typed(node)
            if unwrapped is None:
                continue
            type_name, config, _ = unwrapped
            if type_name in HCM_TYPES:
                managers += 1
                names |= {f.name for f in http_filters(config.get("http_filters"), ()) if f.is_ext_authz}
            elif type_name == ROUTE_CONFIGURATION_TYPE and isinstance(config.get("name"), str):
                tables.add(str(config["name"]))
    return EnvoyContext(frozenset(names), frozenset(tables), managers)
