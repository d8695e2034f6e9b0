"""Recorded exceptions. A finding the operator has accepted stays visible but is
reported as info, with the reason, and no longer fails the lint.

- Envoy: ``metadata.filter_metadata["opa-sidecar.lint"]`` on any object that
  has metadata (listener, virtual host, route, cluster) waives the listed rules
  for that object and everything inside it::

      metadata:
        filter_metadata:
          opa-sidecar.lint: {waive: [per-route-disabled], reason: "kubelet probes"}

- Kubernetes resources: annotations ``opa-sidecar.lint/waive`` (comma-separated
  rule ids) and ``opa-sidecar.lint/reason`` waive them for the whole resource,
  including configs embedded in a ConfigMap.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.lint.findings import Pointer
from sidecar.lint.loader import Document
from sidecar.lint.tree import walk
from sidecar.lint.values import Json, as_dict, get_path

WAIVER_KEY = "opa-sidecar.lint"


@dataclass(frozen=True, slots=True)
class Waiver:
    scope: tuple[str, ...]  # pointer from the document root, as strings
    rules: frozenset[str]
    reason: str

    def covers(self, rule: str, path: tuple[str, ...]) -> bool:
        return rule in self.rules and path[: len(self.scope)] == self.scope


def find_waivers(document: Document) -> list[Waiver]:
    found = []
    listed = document.annotations.get(f"{WAIVER_KEY}/waive")
    if listed:
        found.append(Waiver((), _rule_ids(listed), document.annotations.get(f"{WAIVER_KEY}/reason", "")))
    for path, node in walk(document.data):
        entry = as_dict(get_path(node, "metadata", "filter_metadata", WAIVER_KEY))
        if entry is not None:
            reason = entry.get("reason")
            found.append(Waiver(absolute(document, path), _rule_ids(entry.get("waive")), str(reason or "")))
    return found


def absolute(document: Document, path: Pointer) -> tuple[str, ...]:
    return tuple(str(part) for part in (*document.base, *path))


def _rule_ids(value: Json) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return frozenset(str(item).strip() for item in items if str(item).strip())
