"""The containers and volumes the authorizer adds to a pod, locked down as in deploy/kubernetes.

They run as native sidecars (init containers with `restartPolicy: Always`): they start
before the application, and a Job's pod still completes when its application exits.

In envoy mode Envoy asks the sidecar over a unix socket in a volume only the two of them
mount: the application shares the pod's network namespace, not that volume, so it cannot
ask for checks. The socket is created 0660 with the sidecar's group, which Envoy runs as
(no pod-wide fsGroup, which would change the ownership of the application's volumes)."""

from __future__ import annotations

from typing import Any

from sidecar.inject.options import InjectOptions

ENVOY, SIDECAR, OPA = "opa-sidecar-envoy", "opa-sidecar", "opa-sidecar-opa"
ENVOY_CONFIG_VOLUME, ENVOY_TMP_VOLUME, POLICY_VOLUME, SOCKET_VOLUME = (
    "opa-sidecar-envoy-config",
    "opa-sidecar-envoy-tmp",
    "opa-sidecar-policy",
    "opa-sidecar-socket",
)
SOCKET_DIR = "/run/opa-sidecar"
SOCKET_ADDR = f"unix://{SOCKET_DIR}/authz.sock"  # envoy mode's --grpc-addr
TCP_GRPC_ADDR = "127.0.0.1:9191"  # istio mode's: the Istio proxy reaches it over loopback
SIDECAR_PROBE_PORT_NAME, OPA_DIAGNOSTIC_PORT_NAME = "authz-probe", "authz-opa-diag"
# Ports every mode takes in the pod's network namespace, and what listens there.
SIDECAR_PORTS = {9192: "opa-sidecar HTTP", 9193: "opa-sidecar probes"}
SIDECAR_TCP_GRPC_PORT = {9191: "opa-sidecar gRPC"}
OPA_PORTS = {8181: "OPA API", 8282: "OPA diagnostics"}
ENVOY_ADMIN_PORT = 9901
POLICY_DIR = "/policies"


SIDECAR_UID = 10001


def _locked_down(uid: int, gid: int | None = None) -> dict[str, Any]:
    return {
        "runAsUser": uid,
        "runAsGroup": uid if gid is None else gid,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _resources(options: InjectOptions, role: str) -> dict[str, Any]:
    return {kind: dict(values) for kind, values in options.resources[role].items()}


def envoy_container(options: InjectOptions, port_name: str) -> dict[str, Any]:
    return {
        "name": ENVOY,
        "image": options.images["envoy"],
        "command": ["envoy"],
        "args": ["--config-path", "/etc/envoy/envoy.yaml", "--concurrency", "2"],
        "restartPolicy": "Always",
        "ports": [{"name": port_name, "containerPort": options.listen_port}],
        "volumeMounts": [
            {"name": ENVOY_CONFIG_VOLUME, "mountPath": "/etc/envoy", "readOnly": True},
            {"name": ENVOY_TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - Envoy's own scratch, an emptyDir
            # Connecting to the socket needs no write access to the volume.
            {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR, "readOnly": True},
        ],
        # Envoy's admin /ready is on loopback; the listener accepts once Envoy is initialised.
        "readinessProbe": {"tcpSocket": {"port": port_name}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": port_name}, "periodSeconds": 10, "failureThreshold": 3},
        "resources": _resources(options, "envoy"),
        "securityContext": _locked_down(101, SIDECAR_UID),  # the socket's group
    }


def sidecar_container(options: InjectOptions) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": SIDECAR,
        "image": options.images["opa-sidecar"],
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "--opa-url",
            "http://127.0.0.1:8181",
            "--grpc-addr",
            SOCKET_ADDR if options.mode == "envoy" else TCP_GRPC_ADDR,
            "--http-addr",
            "127.0.0.1:9192",
            "--probe-addr",
            "0.0.0.0:9193",
        ],
        "restartPolicy": "Always",
        "ports": [{"name": SIDECAR_PROBE_PORT_NAME, "containerPort": 9193}],
        # /healthz never depends on OPA; /readyz follows OPA's /health, so a pod that can
        # only deny gets no traffic.
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": SIDECAR_PROBE_PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": SIDECAR_PROBE_PORT_NAME},
            "periodSeconds": 5,
        },
        "resources": _resources(options, "opa-sidecar"),
        "securityContext": _locked_down(SIDECAR_UID),
    }
    if options.mode == "envoy":
        container["volumeMounts"] = [{"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR}]
    return container


def opa_container(options: InjectOptions) -> dict[str, Any]:
    args = ["run", "--server", "--addr=127.0.0.1:8181", "--diagnostic-addr=0.0.0.0:8282"]
    args.append("--set=decision_logs.console=true")
    container: dict[str, Any] = {"name": OPA, "image": options.images["opa"], "args": args}
    health = "/health"
    if options.bundle is None:
        # A ConfigMap volume holds hidden ..data directories; load each file once.
        args += ["--ignore=.*", POLICY_DIR]
        container["volumeMounts"] = [{"name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": True}]
    else:
        args += [
            f"--set=services.policy.url={options.bundle.service_url}",
            "--set=bundles.authz.service=policy",
            f"--set=bundles.authz.resource={options.bundle.resource}",
        ]
        health = "/health?bundles"  # ready only once the bundle is active
    container.update(
        {
            "restartPolicy": "Always",
            "ports": [{"name": OPA_DIAGNOSTIC_PORT_NAME, "containerPort": 8282}],
            "livenessProbe": {
                "httpGet": {"path": "/health", "port": OPA_DIAGNOSTIC_PORT_NAME},
                "periodSeconds": 10,
            },
            "readinessProbe": {
                "httpGet": {"path": health, "port": OPA_DIAGNOSTIC_PORT_NAME},
                "periodSeconds": 5,
            },
            "resources": _resources(options, "opa"),
            "securityContext": _locked_down(1000),
        }
    )
    return container


def policy_volume(configmap: str, keys: list[str] | None) -> dict[str, Any]:
    """The policy ConfigMap; keys written as `dir__file` (as `python -m deploy.render` writes
    them) go back to `dir/file`, since OPA places a data file by its directory."""
    source: dict[str, Any] = {"name": configmap}
    if keys is not None and any("__" in key for key in keys):
        source["items"] = [{"key": key, "path": key.replace("__", "/")} for key in sorted(keys)]
    return {"name": POLICY_VOLUME, "configMap": source}
