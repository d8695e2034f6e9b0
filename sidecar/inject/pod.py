"""Adding the authorizer to one pod template, or refusing when that cannot be done safely.

Envoy mode: Envoy listens on a port of its own (--listen-port, 10000) and proxies to the
application's port on loopback. Envoy takes over the name of the application's port and
the application's port entry is removed, so a Service that targets the port by name now
reaches Envoy; a probe of the application that named the port gets its number (the kubelet
still probes the application directly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.inject.containers import (
    ENVOY,
    ENVOY_ADMIN_PORT,
    ENVOY_CONFIG_VOLUME,
    ENVOY_TMP_VOLUME,
    OPA,
    OPA_DIAGNOSTIC_PORT_NAME,
    OPA_PORTS,
    POLICY_VOLUME,
    SIDECAR,
    SIDECAR_PORTS,
    SIDECAR_PROBE_PORT_NAME,
    SIDECAR_TCP_GRPC_PORT,
    SOCKET_VOLUME,
    envoy_container,
    opa_container,
    policy_volume,
    sidecar_container,
)
from sidecar.inject.options import InjectOptions
from sidecar.inject.workloads import RefusedError, Workload

MARKER = "opa-sidecar/injected"  # pod template annotation: the mode it was injected with
APP_PORT_ANNOTATION = "opa-sidecar/app-port"
DEFAULT_ENVOY_PORT_NAME = "http"
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


@dataclass(frozen=True)
class AppPort:
    number: int
    name: str | None


@dataclass(frozen=True)
class Injected:
    """What the companion documents need to know about an injected pod."""

    app_port: AppPort | None  # envoy mode only
    envoy_port_name: str | None


def already_injected(workload: Workload, mode: str) -> bool:
    marker = ((workload.template.get("metadata") or {}).get("annotations") or {}).get(MARKER)
    if marker is None:
        return False
    if marker != mode:
        raise RefusedError(f"it was injected in {marker!r} mode, not {mode!r}; remove that first")
    names = {c.get("name") for c in workload.spec.get("initContainers") or []}
    if not {SIDECAR, OPA} <= names or (mode == "envoy" and ENVOY not in names):
        raise RefusedError(f"it is annotated {MARKER} but its authorizer containers are missing")
    return True


def inject_pod(workload: Workload, options: InjectOptions, policy_keys: list[str] | None) -> Injected:
    spec = workload.spec
    workload.pod_labels()  # refuses pods without labels before anything changes
    if spec.get("hostNetwork"):
        raise RefusedError(
            "it uses hostNetwork: the authorizer's loopback ports would be the node's, open to its every pod"
        )
    containers: list[dict[str, Any]] = spec["containers"]
    init_containers: list[dict[str, Any]] = spec.get("initContainers") or []
    volumes: list[dict[str, Any]] = spec.get("volumes") or []
    ours = [OPA, SIDECAR] + ([ENVOY] if options.mode == "envoy" else [])
    _refuse_taken("container", {c.get("name") for c in containers + init_containers}, ours)
    our_volumes = ([] if options.bundle else [POLICY_VOLUME]) + (
        [ENVOY_CONFIG_VOLUME, ENVOY_TMP_VOLUME, SOCKET_VOLUME] if options.mode == "envoy" else []
    )
    _refuse_taken("volume", {v.get("name") for v in volumes}, our_volumes)
    declared = _declared_ports(containers + init_containers)
    taken = {**SIDECAR_PORTS, **OPA_PORTS}
    if options.mode == "envoy":
        taken |= {ENVOY_ADMIN_PORT: "Envoy admin", options.listen_port: "Envoy's listener"}
    else:
        taken |= SIDECAR_TCP_GRPC_PORT
    for number, _, owner in declared:
        if number in taken:
            raise RefusedError(f"container {owner!r} declares port {number}, which the {taken[number]} needs")
    port_names = {name for _, name, _ in declared if name}
    _refuse_taken("port", port_names, [SIDECAR_PROBE_PORT_NAME, OPA_DIAGNOSTIC_PORT_NAME])

    added = [opa_container(options), sidecar_container(options)]
    app_port: AppPort | None = None
    envoy_port_name: str | None = None
    if options.mode == "envoy":
        app_port = _app_port(containers, options.app_port)
        envoy_port_name = app_port.name or DEFAULT_ENVOY_PORT_NAME
        if app_port.name is None and envoy_port_name in port_names:
            raise RefusedError(f"port name {envoy_port_name!r} is already taken; name the application's port")
        _hand_port_to_envoy(containers, app_port)
        added.append(envoy_container(options, envoy_port_name))
        volumes += [
            {"name": ENVOY_CONFIG_VOLUME, "configMap": {"name": envoy_configmap_name(workload)}},
            {"name": ENVOY_TMP_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
            {"name": SOCKET_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}},
        ]
        workload.annotations[APP_PORT_ANNOTATION] = str(app_port.number)
    if options.bundle is None:
        volumes.append(policy_volume(options.policy_configmap, policy_keys))
    spec["initContainers"] = added + init_containers
    spec["volumes"] = volumes
    workload.annotations[MARKER] = options.mode
    return Injected(app_port, envoy_port_name)


def envoy_configmap_name(workload: Workload) -> str:
    return f"{workload.name}-opa-sidecar-envoy"


def _refuse_taken(what: str, present: set[Any], ours: list[str]) -> None:
    for name in ours:
        if name in present:
            raise RefusedError(f"{what} name {name!r} is already taken")


def _declared_ports(containers: list[dict[str, Any]]) -> list[tuple[int, str | None, str]]:
    found = []
    for container in containers:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if not isinstance(number, int) or isinstance(number, bool):
                raise RefusedError(
                    f"container {container.get('name')!r} has a port without a containerPort number"
                )
            found.append((number, port.get("name"), str(container.get("name"))))
    return found


def _app_port(containers: list[dict[str, Any]], chosen: str | None) -> AppPort:
    candidates = [
        AppPort(port["containerPort"], port.get("name"))
        for container in containers
        for port in container.get("ports") or []
        if port.get("protocol", "TCP") == "TCP"
    ]
    if chosen is not None:
        picked = [p for p in candidates if chosen in (p.name, str(p.number))]
        if not picked:
            raise RefusedError(f"no container declares the TCP port {chosen!r} given with --port")
        return picked[0]
    if not candidates:
        raise RefusedError("no container declares a TCP port for Envoy to guard (containers[].ports)")
    if len(candidates) > 1:
        listed = ", ".join(p.name or str(p.number) for p in candidates)
        raise RefusedError(
            f"it declares several TCP ports ({listed}); choose the one Envoy guards with --port"
        )
    return candidates[0]


def _hand_port_to_envoy(containers: list[dict[str, Any]], app_port: AppPort) -> None:
    """Remove the application's port entry; what named it uses the number."""
    for container in containers:
        ports = container.get("ports") or []
        kept = [p for p in ports if p.get("containerPort") != app_port.number]
        if len(kept) != len(ports):
            if kept:
                container["ports"] = kept
            else:
                del container["ports"]
        for probe_name in _PROBES:
            handler = container.get(probe_name) or {}
            for kind in ("httpGet", "tcpSocket", "grpc"):
                action = handler.get(kind)
                if isinstance(action, dict) and app_port.name and action.get("port") == app_port.name:
                    action["port"] = app_port.number
