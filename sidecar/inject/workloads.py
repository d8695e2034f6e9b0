"""Where each kind keeps its pod template, and the labels that select its pods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# kind -> keys from the document to the pod template (a Pod is its own template).
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class RefusedError(ValueError):
    """What inject cannot do safely for one document (the message says why)."""


@dataclass(frozen=True)
class Workload:
    document: dict[str, Any]
    template: dict[str, Any]  # the pod template: metadata and spec

    @property
    def kind(self) -> str:
        return str(self.document["kind"])

    @property
    def name(self) -> str:
        return str(self.document["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        namespace = self.document["metadata"].get("namespace")
        return None if namespace is None else str(namespace)

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.template["spec"]
        return spec

    @property
    def annotations(self) -> dict[str, Any]:
        if self.template.get("metadata") is None:
            self.template["metadata"] = {}
        metadata = self.template["metadata"]
        if metadata.get("annotations") is None:
            metadata["annotations"] = {}
        annotations: dict[str, Any] = metadata["annotations"]
        return annotations

    def pod_labels(self) -> dict[str, str]:
        """Labels every pod of the workload carries, to select them by. Never empty: an empty
        selector would select every pod of the namespace."""
        selector = self.document.get("spec", {}).get("selector") if self.kind != "Pod" else None
        labels = (selector or {}).get("matchLabels") if isinstance(selector, dict) else None
        if not labels:
            labels = (self.template.get("metadata") or {}).get("labels")
        if not isinstance(labels, dict) or not labels:
            raise RefusedError("its pods have no labels to select them by")
        return {str(k): str(v) for k, v in labels.items()}


def workload_of(document: dict[str, Any]) -> Workload | None:
    """The workload a document describes, or None for a kind without a pod template."""
    path = TEMPLATE_PATHS.get(str(document.get("kind")))
    if path is None or not str(document.get("apiVersion", "")):
        return None
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise RefusedError("it has no metadata.name")
    template: Any = document
    for key in path:
        template = template.get(key) if isinstance(template, dict) else None
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        raise RefusedError(f"it has no pod template at {'.'.join((*path, 'spec'))}")
    if not isinstance(template["spec"].get("containers"), list) or not template["spec"]["containers"]:
        raise RefusedError("its pod has no containers")
    from sidecar.inject.shape import check_workload  # shape refuses with this module's error

    check_workload(document, template, ".".join(path))
    return Workload(document, template)
