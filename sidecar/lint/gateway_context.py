"""What the Envoy Gateway resources linted together say about each other: which
Gateways have a SecurityPolicy with extAuth, and which Gateways each route
attaches to. A SecurityPolicy on a route replaces the Gateway's for that route
(Envoy Gateway's policy precedence: the most specific target wins, unless the
route's policy sets mergeType)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sidecar.lint.values import Json, as_dict, as_list

ROUTE_KINDS = frozenset({"HTTPRoute", "GRPCRoute"})

# (namespace, name)
Named = tuple[str, str]


@dataclass(frozen=True, slots=True)
class GatewayContext:
    ext_auth_gateways: dict[Named, str] = field(default_factory=dict)  # Gateway -> its policy's name
    route_parents: dict[tuple[str, str, str], frozenset[Named]] = field(
        default_factory=dict
    )  # (ns, kind, name)


def namespace_of(document: dict[str, Json]) -> str:
    namespace = (as_dict(document.get("metadata")) or {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else "default"


def name_of(document: dict[str, Json]) -> str:
    return str((as_dict(document.get("metadata")) or {}).get("name", ""))


def is_security_policy(document: dict[str, Json]) -> bool:
    return str(document.get("apiVersion", "")).startswith("gateway.envoyproxy.io/") and (
        document.get("kind") == "SecurityPolicy"
    )


def target_refs(spec: dict[str, Json]) -> list[tuple[int | None, dict[str, Json]]]:
    """(position in targetRefs, or None for the older single targetRef; the reference)."""
    found: list[tuple[int | None, dict[str, Json]]] = [
        (position, ref)
        for position, raw in enumerate(as_list(spec.get("targetRefs")) or [])
        if (ref := as_dict(raw)) is not None
    ]
    single = as_dict(spec.get("targetRef"))
    return found + ([(None, single)] if single is not None else [])


def survey_gateway(documents: Iterable[Json]) -> GatewayContext:
    gateways: dict[Named, str] = {}
    parents: dict[tuple[str, str, str], frozenset[Named]] = {}
    for raw in documents:
        document = as_dict(raw)
        if document is None:
            continue
        namespace = namespace_of(document)
        spec = as_dict(document.get("spec")) or {}
        if is_security_policy(document) and as_dict(spec.get("extAuth")) is not None:
            for _, ref in target_refs(spec):
                if ref.get("kind") == "Gateway":
                    gateways[(namespace, str(ref.get("name", "")))] = name_of(document)
        elif str(document.get("apiVersion", "")).startswith("gateway.networking.k8s.io/") and (
            document.get("kind") in ROUTE_KINDS
        ):
            refs = [as_dict(ref) or {} for ref in as_list(spec.get("parentRefs")) or []]
            parents[(namespace, str(document["kind"]), name_of(document))] = frozenset(
                (str(ref.get("namespace", namespace)), str(ref.get("name", "")))
                for ref in refs
                if ref.get("kind", "Gateway") == "Gateway"
            )
    return GatewayContext(gateways, parents)
