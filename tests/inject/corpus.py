"""Realistic manifests to inject, generated: each workload kind as people write them
(named and numbered ports, probes on named ports, init containers, volumes, a Service
beside it), Lists, multi-document streams, and kinds that must pass through."""

from __future__ import annotations

import copy
from typing import Any

Manifest = dict[str, Any]


def app_container(name: str = "app", port: int = 8080, port_name: str | None = "http") -> Manifest:
    port_entry: Manifest = {"containerPort": port}
    if port_name is not None:
        port_entry["name"] = port_name
    probe_port: str | int = port_name if port_name is not None else port
    return {
        "name": name,
        "image": "ghcr.io/example/app:2.4.1",
        "ports": [port_entry],
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": probe_port}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": probe_port}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
    }


def pod_spec(**container: Any) -> Manifest:
    return {
        "initContainers": [
            {"name": "migrate", "image": "ghcr.io/example/app:2.4.1", "command": ["app", "migrate"]}
        ],
        "containers": [app_container(**container)],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    }


def _template(labels: dict[str, str], spec: Manifest) -> Manifest:
    return {"metadata": {"labels": dict(labels), "annotations": {"team": "shop"}}, "spec": spec}


def deployment(name: str = "orders", namespace: str | None = "shop", **container: Any) -> Manifest:
    labels = {"app.kubernetes.io/name": name}
    metadata: Manifest = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate"},
            "template": _template(labels, pod_spec(**container)),
        },
    }


def service(name: str, namespace: str | None, target: str | int, selector_of: str | None = None) -> Manifest:
    metadata: Manifest = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": {"app.kubernetes.io/name": selector_of or name},
            "ports": [{"name": "web", "port": 80, "targetPort": target}],
        },
    }


def statefulset() -> Manifest:
    labels = {"app.kubernetes.io/name": "ledger"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "ledger", "namespace": "shop"},
        "spec": {
            "serviceName": "ledger",
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": _template(labels, pod_spec(port=7000, port_name="api")),
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


def daemonset() -> Manifest:
    labels = {"app.kubernetes.io/name": "node-api"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "node-api", "namespace": "ops"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": _template(labels, pod_spec(port_name=None)),
        },
    }


def replicaset() -> Manifest:
    labels = {"app.kubernetes.io/name": "legacy", "tier": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "legacy"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": _template(labels, pod_spec()),
        },
    }


def job() -> Manifest:
    spec = pod_spec(port=9000, port_name="metrics")
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "report", "namespace": "batch"},
        "spec": {"backoffLimit": 2, "template": _template({"app.kubernetes.io/name": "report"}, spec)},
    }


def cronjob() -> Manifest:
    spec = pod_spec(port=9000, port_name="metrics")
    spec["restartPolicy"] = "OnFailure"
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "batch"},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": _template({"app.kubernetes.io/name": "nightly"}, spec)}},
        },
    }


def pod() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "debug-api",
            "namespace": "shop",
            "labels": {"app.kubernetes.io/name": "debug-api"},
        },
        "spec": pod_spec(port=3000, port_name="web"),
    }


def passthrough() -> list[Manifest]:
    """Kinds inject must leave exactly as they are."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1\n2\n"}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "stringData": {"url": "postgres://db"},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"rules": [{"host": "shop.example.com"}]},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders"},
                "minReplicas": 1,
                "maxReplicas": 5,
            },
        },
    ]


def workloads() -> dict[str, list[Manifest]]:
    """Named streams, each a list of documents."""
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [deployment("catalog", "shop"), service("catalog", "shop", "http"), replicaset()],
    }
    return {
        "deployment-and-service-by-number": [deployment(), service("orders", "shop", 8080)],
        "deployment-unnamed-port": [
            deployment("search", None, port_name=None),
            service("search", None, 8080),
        ],
        "statefulset": [statefulset(), service("ledger", "shop", "api")],
        "daemonset": [daemonset()],
        "replicaset": [replicaset()],
        "job": [job()],
        "cronjob": [cronjob()],
        "pod": [pod()],
        "list": [listed],
        "multi-document": [*passthrough(), deployment(), pod(), cronjob()],
    }


def copied(documents: list[Manifest]) -> list[Manifest]:
    return copy.deepcopy(documents)
