"""Kubernetes YAML streams in and out: each document (and each item of a List) is a
workload to inject, a Service to point at Envoy, or passed through unchanged; the
documents the injected workloads need are appended."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from sidecar.inject import companions
from sidecar.inject.options import InjectOptions
from sidecar.inject.pod import Injected, already_injected, inject_pod
from sidecar.inject.workloads import RefusedError, Workload, workload_of


class InjectError(ValueError):
    """Input inject will not transform; each line names a document."""


@dataclass(frozen=True)
class Source:
    label: str  # a file name, or "stdin"
    text: str


@dataclass(frozen=True)
class _Entry:
    label: str
    document: dict[str, Any]


def _metadata(document: dict[str, Any]) -> dict[str, Any]:
    metadata = document.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _key(document: dict[str, Any]) -> tuple[str, str | None, str]:
    namespace = _metadata(document).get("namespace")
    return (
        str(document.get("kind")),
        namespace if isinstance(namespace, str) else None,
        str(_metadata(document).get("name")),
    )


def _describe(document: dict[str, Any]) -> str:
    name = _metadata(document).get("name")
    return f"{document.get('kind', 'no kind')}/{name}" if name else str(document.get("kind", "no kind"))


MAX_NODES = 1_000_000  # per source, after YAML aliases are expanded


def _unshared(node: Any, budget: list[int]) -> Any:
    """A copy in which no mapping or list appears twice: a YAML alias becomes its own copy,
    so injecting one workload never changes another that shared its template. Counted, so
    nested aliases that would expand without bound are refused."""
    budget[0] -= 1
    if budget[0] < 0:
        raise InjectError(f"more than {MAX_NODES} values once its YAML aliases are expanded")
    if isinstance(node, dict):
        return {key: _unshared(value, budget) for key, value in node.items()}
    if isinstance(node, list):
        return [_unshared(value, budget) for value in node]
    return node


def _load(sources: Sequence[Source]) -> tuple[list[Any], list[_Entry]]:
    documents: list[Any] = []
    entries: list[_Entry] = []
    for source in sources:
        try:
            loaded = [d for d in yaml.load_all(source.text, Loader=_Loader) if d is not None]
        except yaml.YAMLError as exc:
            raise InjectError(f"{source.label}: not YAML: {exc}".replace("\n", " ")) from None
        try:
            loaded = _unshared(loaded, [MAX_NODES])
        except InjectError as exc:
            raise InjectError(f"{source.label}: {exc}") from None
        for index, document in enumerate(loaded, start=1):
            label = f"{source.label}: document {index}"
            if not isinstance(document, dict):
                raise InjectError(f"{label}: not a Kubernetes object (a mapping)")
            documents.append(document)
            items = document.get("items")
            if document.get("kind") == "List" or str(document.get("kind", "")).endswith("List"):
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    raise InjectError(f"{label} ({_describe(document)}): its items are not a list of objects")
                entries += [
                    _Entry(f"{label} ({document['kind']}), item {n} ({_describe(item)})", item)
                    for n, item in enumerate(items, start=1)
                ]
            else:
                entries.append(_Entry(f"{label} ({_describe(document)})", document))
    return documents, entries


def inject(sources: Sequence[Source], options: InjectOptions) -> list[dict[str, Any]]:
    """The documents with the authorizer added; raises InjectError listing every document
    it refuses (nothing is written then)."""
    documents, entries = _load(sources)
    present = {_key(e.document): e.document for e in entries}
    policy = next(
        (
            d
            for (kind, _, name), d in present.items()
            if (kind, name) == ("ConfigMap", options.policy_configmap)
        ),
        None,
    )
    policy_keys = None
    if policy is not None:
        data = [policy.get(field) for field in ("data", "binaryData")]
        policy_keys = sorted(str(key) for part in data if isinstance(part, dict) for key in part)
    problems: list[str] = []
    injected: list[tuple[Workload, Injected]] = []
    for entry in entries:
        try:
            workload = workload_of(entry.document)
            if workload is None or already_injected(workload, options.mode):
                continue
            injected.append((workload, inject_pod(workload, options, policy_keys)))
        except RefusedError as exc:
            problems.append(f"{entry.label}: cannot inject: {exc}")
    if options.mode == "envoy":
        for entry in entries:
            if entry.document.get("kind") == "Service":
                for workload, facts in injected:
                    companions.retarget_service(entry.document, workload, facts)
    added: list[dict[str, Any]] = []
    for document in _companions(injected, options):
        existing = present.get(_key(document))
        if existing is None:
            present[_key(document)] = document
            added.append(document)
        elif existing != document:
            described = _describe(document)
            problems.append(f"{described}: cannot inject: the input already has a different {described}")
    if problems:
        raise InjectError("\n".join(problems))
    return documents + added


def _companions(
    injected: list[tuple[Workload, Injected]], options: InjectOptions
) -> Iterator[dict[str, Any]]:
    for workload, facts in injected:
        if options.mode == "envoy":
            yield companions.envoy_configmap(workload, facts, options.listen_port)
            yield companions.network_policy(workload, options.listen_port)
        else:
            yield companions.authorization_policy(workload)
    if options.mode == "istio":
        for namespace in dict.fromkeys(workload.namespace for workload, _ in injected):
            yield companions.service_entry(namespace)


# libyaml's parser and emitter when PyYAML was built with it: several times faster.
_Loader: type[yaml.CSafeLoader | yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[yaml.CSafeDumper | yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Multi-line strings (an Envoy configuration in a ConfigMap) as literal blocks."""


def _string(dumper: yaml.representer.SafeRepresenter, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def dump(documents: Sequence[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
