"""Walking a parsed document."""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.lint.findings import Pointer
from sidecar.lint.values import Json


def walk(value: Json, path: Pointer = ()) -> Iterator[tuple[Pointer, Json]]:
    """Every node with its pointer, parents first. YAML aliases may make a
    node appear under several pointers; a recursive alias is followed once."""
    active: set[int] = set()

    def visit(node: Json, where: Pointer) -> Iterator[tuple[Pointer, Json]]:
        yield where, node
        if not isinstance(node, dict | list) or id(node) in active:
            return
        active.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            yield from visit(child, (*where, key))
        active.discard(id(node))

    yield from visit(value, path)
