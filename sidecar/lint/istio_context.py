"""What the Istio AuthorizationPolicies linted together say about each other:
which workloads an enforced ALLOW policy applies to. A request a CUSTOM policy
skips is then denied unless an ALLOW rule matches it; with no ALLOW policy on
the workload, Istio lets it through.

A policy applies to the workloads of its namespace that its ``selector``
(``matchLabels``) or ``targetRefs`` pick, all of them when it has neither; one
in the root namespace (``istio-system`` unless the mesh config says otherwise)
applies across the mesh."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sidecar.lint.go_reading import go_parse_bool
from sidecar.lint.values import Json, as_dict, as_list, get_path

ROOT_NAMESPACE = "istio-system"


@dataclass(frozen=True, slots=True)
class Scope:
    """The workloads a policy applies to."""

    namespace: str
    labels: frozenset[tuple[str, str]]  # matchLabels; empty for every workload of the namespace
    targets: frozenset[tuple[str, str]]  # (kind, name) of targetRefs

    def covers(self, other: Scope) -> bool:
        """Whether this (an ALLOW policy's scope) applies to every workload ``other`` picks."""
        if self.namespace not in (other.namespace, ROOT_NAMESPACE):
            return False
        if self.targets:
            return bool(other.targets) and other.targets <= self.targets
        if not self.labels:
            return True
        return not other.targets and bool(other.labels) and self.labels <= other.labels


@dataclass(frozen=True, slots=True)
class IstioContext:
    allow_scopes: tuple[Scope, ...] = field(default_factory=tuple)

    def allow_covers(self, scope: Scope) -> bool:
        return any(allow.covers(scope) for allow in self.allow_scopes)


def is_authorization_policy(document: dict[str, Json]) -> bool:
    return str(document.get("apiVersion", "")).startswith("security.istio.io/") and (
        document.get("kind") == "AuthorizationPolicy"
    )


def scope_of(document: dict[str, Json]) -> Scope:
    spec = as_dict(document.get("spec")) or {}
    namespace = get_path(document, "metadata", "namespace")
    labels = as_dict(get_path(spec, "selector", "matchLabels")) or {}
    refs = [as_dict(ref) or {} for ref in (as_list(spec.get("targetRefs")) or [])]
    single = as_dict(spec.get("targetRef"))
    refs += [single] if single is not None else []
    return Scope(
        namespace if isinstance(namespace, str) and namespace else "default",
        frozenset((str(k), str(v)) for k, v in labels.items()),
        frozenset((str(ref.get("kind", "")), str(ref.get("name", ""))) for ref in refs),
    )


def survey_istio(documents: Iterable[Json]) -> IstioContext:
    scopes = []
    for raw in documents:
        document = as_dict(raw)
        if document is None or not is_authorization_policy(document):
            continue
        spec = as_dict(document.get("spec")) or {}
        dry_run = get_path(document, "metadata", "annotations", "istio.io/dry-run")
        if str(spec.get("action", "ALLOW")) == "ALLOW" and not (
            isinstance(dry_run, str) and go_parse_bool(dry_run)
        ):
            scopes.append(scope_of(document))
    return IstioContext(tuple(scopes))
