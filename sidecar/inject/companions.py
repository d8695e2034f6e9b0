"""The documents an injected workload needs beside its pod: Envoy's ConfigMap and a
NetworkPolicy (envoy mode), an AuthorizationPolicy and a ServiceEntry (istio mode), and
the mesh config's extension provider."""

from __future__ import annotations

from typing import Any

from sidecar.envoy.bootstrap import EnvoyAddresses, render_envoy
from sidecar.inject.containers import SOCKET_ADDR
from sidecar.inject.pod import Injected, envoy_configmap_name
from sidecar.inject.workloads import Workload

PROVIDER = "opa-sidecar"
# The pod's own opa-sidecar, as the Istio proxy beside it reaches it (a ServiceEntry
# resolving to loopback: the proxy and the sidecar share the pod's network namespace).
PROVIDER_HOST = "opa-sidecar.local"
LABELS = {"app.kubernetes.io/managed-by": "opa-sidecar-inject"}


def _metadata(name: str, namespace: str | None, workload: Workload) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {**LABELS, "opa-sidecar/workload": workload.name}
    return metadata


def envoy_configmap(workload: Workload, injected: Injected, listen_port: int) -> dict[str, Any]:
    # The Envoy configuration is the project's one template, rendered for this pod's ports.
    assert injected.app_port is not None
    addresses = EnvoyAddresses(
        listen=f"0.0.0.0:{listen_port}", upstream=f"127.0.0.1:{injected.app_port.number}", sidecar=SOCKET_ADDR
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(envoy_configmap_name(workload), workload.namespace, workload),
        "data": {"envoy.yaml": render_envoy(addresses)},
    }


def network_policy(workload: Workload, listen_port: int) -> dict[str, Any]:
    """Traffic into the pods reaches Envoy's listener only (the kubelet's probes come from
    the node, which a NetworkPolicy does not block)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(f"{workload.name}-opa-sidecar", workload.namespace, workload),
        "spec": {
            "podSelector": {"matchLabels": workload.pod_labels()},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": listen_port}]}],
        },
    }


def retarget_service(service: dict[str, Any], workload: Workload, injected: Injected) -> bool:
    """Point a Service of the workload's pods that targeted the application's port at Envoy's."""
    app_port = injected.app_port
    if app_port is None or injected.envoy_port_name is None:
        return False
    spec, metadata = service.get("spec"), service.get("metadata")
    if (
        not isinstance(spec, dict)
        or not isinstance(metadata, dict)
        or not isinstance(spec.get("ports"), list)
    ):
        return False  # not a Service Kubernetes would take: passed through as it is
    selector = spec.get("selector")
    labels = (workload.template.get("metadata") or {}).get("labels") or {}
    if metadata.get("namespace") != workload.namespace or not isinstance(selector, dict):
        return False
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        return False
    changed = False
    for port in spec["ports"]:
        if not isinstance(port, dict):
            continue
        target = port.get("targetPort", port.get("port"))
        targets_app = target in (app_port.number, str(app_port.number)) or (
            app_port.name is not None and target == app_port.name
        )
        if targets_app and port.get("targetPort") != injected.envoy_port_name:
            port["targetPort"] = injected.envoy_port_name
            changed = True
    return changed


def authorization_policy(workload: Workload) -> dict[str, Any]:
    """Every request to the workload goes to the provider: one rule that matches everything,
    since a request no CUSTOM rule matches is never checked."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": _metadata(f"{workload.name}-opa-sidecar", workload.namespace, workload),
        "spec": {
            "selector": {"matchLabels": workload.pod_labels()},
            "action": "CUSTOM",
            "provider": {"name": PROVIDER},
            "rules": [{}],
        },
    }


def service_entry(namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "opa-sidecar-local"}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(LABELS)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": metadata,
        "spec": {
            "hosts": [PROVIDER_HOST],
            "endpoints": [{"address": "127.0.0.1"}],
            "ports": [{"name": "grpc", "number": 9191, "protocol": "GRPC"}],
            # Plain gRPC over the pod's loopback: no mutual TLS to a peer that is not a proxy.
            "resolution": "STATIC",
            "exportTo": ["."],
        },
    }


def mesh_config() -> dict[str, Any]:
    """The extension provider, as istiod's Helm values (`meshConfig:`), set as the project's
    Envoy configuration sets ext_authz."""
    return {
        "meshConfig": {
            # The policy and the workload read the same path: /a//b/%2F.. is normalised first.
            "pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"},
            "extensionProviders": [
                {
                    "name": PROVIDER,
                    "envoyExtAuthzGrpc": {
                        "service": PROVIDER_HOST,
                        "port": 9191,
                        # Longer than the sidecar's --opa-timeout (0.15 s), so its deny arrives first.
                        "timeout": "0.25s",
                        "failOpen": False,
                        "statusOnError": "503",
                        "includeRequestBodyInCheck": {
                            "maxRequestBytes": 8192,
                            "allowPartialMessage": True,
                            "packAsBytes": True,
                        },
                    },
                }
            ],
        }
    }
