"""The parts of a workload inject reads or changes must have the shape Kubernetes gives
them; anything else is refused with the path of the first field that does not."""

from __future__ import annotations

from typing import Any

from sidecar.inject.workloads import RefusedError

_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def _mapping(value: Any, where: str, *, optional: bool = True) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise RefusedError(f"{where} is not a mapping")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RefusedError(f"{where} is not a list")
    return value


def _strings(value: Any, where: str) -> None:
    for key, item in _mapping(value, where).items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise RefusedError(f"{where} holds {key!r}: {item!r}, not a string to a string")


def check_workload(document: dict[str, Any], template: dict[str, Any], template_path: str) -> None:
    metadata = _mapping(document.get("metadata"), "metadata", optional=False)
    if not isinstance(metadata.get("name"), str):
        raise RefusedError("it has no metadata.name")
    if not isinstance(metadata.get("namespace", ""), str):
        raise RefusedError("metadata.namespace is not a string")
    prefix = f"{template_path}." if template_path else ""
    template_metadata = _mapping(template.get("metadata"), f"{prefix}metadata")
    for field in ("labels", "annotations"):
        _strings(template_metadata.get(field), f"{prefix}metadata.{field}")
    spec = template["spec"]
    for field in ("containers", "initContainers"):
        for index, container in enumerate(_list(spec.get(field), f"{prefix}spec.{field}")):
            _check_container(container, f"{prefix}spec.{field}[{index}]")
    for index, volume in enumerate(_list(spec.get("volumes"), f"{prefix}spec.volumes")):
        if not isinstance(
            _mapping(volume, f"{prefix}spec.volumes[{index}]", optional=False).get("name"), str
        ):
            raise RefusedError(f"{prefix}spec.volumes[{index}] has no name")


def _check_container(container: Any, where: str) -> None:
    if not isinstance(_mapping(container, where, optional=False).get("name"), str):
        raise RefusedError(f"{where} has no name")
    for index, port in enumerate(_list(container.get("ports"), f"{where}.ports")):
        entry = _mapping(port, f"{where}.ports[{index}]", optional=False)
        number = entry.get("containerPort")
        if not isinstance(number, int) or isinstance(number, bool):
            raise RefusedError(f"{where}.ports[{index}] has no containerPort number")
        if not isinstance(entry.get("name", ""), str) or not isinstance(entry.get("protocol", ""), str):
            raise RefusedError(f"{where}.ports[{index}] has a name or protocol that is not a string")
    for probe in _PROBES:
        handler = _mapping(container.get(probe), f"{where}.{probe}")
        for kind in ("httpGet", "tcpSocket", "grpc"):
            _mapping(handler.get(kind), f"{where}.{probe}.{kind}")
