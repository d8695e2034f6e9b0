"""Walking a parsed document."""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.lint.findings import Pointer
from sidecar.lint.values import Json


def walk(value: Json, path: Pointer = ()) -> Iterator[tuple[Pointer, Json]]:
    """Every node with its pointer, parents before children. YAML aliases may
    make a node appear under several pointers; a recursive alias is followed
    once. Iterative: nested generators would cost a call per level per node."""
    stack: list[tuple[Pointer, Json, frozenset[int]]] = [(path, value, frozenset())]
    while stack:
        where, node, ancestors = stack.pop()
        yield where, node
        if not isinstance(node, dict | list) or id(node) in ancestors:
            continue
        inner = ancestors | {id(node)}
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        stack.extend(((*where, key), child, inner) for key, child in reversed(items))
