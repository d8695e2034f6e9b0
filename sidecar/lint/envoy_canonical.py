"""An Envoy configuration read in one spelling before any rule looks at it.

Envoy parses YAML and JSON through protobuf's JSON mapping, which takes every
field under its proto name (``failure_mode_allow``) and its JSON name
(``failureModeAllow``). Rules read the proto names only; this module rewrites
each lowerCamel key to snake_case once, so no rule can miss a spelling, and
maps a place in the rewritten document back to the key as written, for the
finding's pointer and line.

Keys are kept as written where they are data, not field names: the filter names
of ``typed_per_filter_config``, the extension names of the other map fields, and
everything inside a ``google.protobuf.Struct`` that is not configuration
(metadata, a static runtime layer). Both spellings of one field in one mapping
are reported: Envoy 1.40 kept one or the other depending on the field, not on
the order written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from sidecar.lint.findings import Pointer
from sidecar.lint.values import Json

# A protobuf JSON name: lower camel case, at least one capital, nothing else.
_LOWER_CAMEL = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+")
_CAPITAL = re.compile(r"[A-Z]")

# map<string, ...> fields: their keys are names, their values configuration.
_MAP_FIELDS = frozenset(
    {
        "typed_per_filter_config",
        "typed_filter_metadata",
        "typed_extension_protocol_options",
        "extension_protocol_options",
    }
)
# Struct fields whose content is data (runtime keys, metadata), kept as written.
_DATA_FIELDS = frozenset({"filter_metadata", "static_layer"})


class _Keys(Enum):
    FIELDS = "fields"  # keys are field names: rewritten
    NAMES = "names"  # keys are names (a map field); the values are configuration
    DATA = "data"  # everything below is data


@dataclass(frozen=True, slots=True)
class Collision:
    """One field written in both spellings in one mapping."""

    path: Pointer  # the canonical pointer of the field
    spellings: tuple[str, str]  # as written, first and second


@dataclass(slots=True)
class Canonical:
    data: Json
    # id of a rewritten mapping -> canonical key -> the key as written
    spelled: dict[int, dict[str, str]] = field(default_factory=dict)
    collisions: list[Collision] = field(default_factory=list)

    def written(self, path: Pointer) -> Pointer:
        """The pointer into the document as written for a canonical ``path``."""
        node: Json = self.data
        found: list[str | int] = []
        for part in path:
            if isinstance(node, dict) and isinstance(part, str):
                found.append(self.spelled.get(id(node), {}).get(part, part))
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                found.append(part)
                node = node[part]
            else:
                found.append(part)
                node = None
        return tuple(found)


def snake_case(key: str) -> str:
    """``failureModeAllow`` -> ``failure_mode_allow``; any other key unchanged."""
    if not _LOWER_CAMEL.fullmatch(key):
        return key
    return _CAPITAL.sub(lambda capital: "_" + capital.group(0).lower(), key)


def canonical(data: Json) -> Canonical:
    """A rewritten copy of ``data``. Iterative, and each node is copied once, so
    shared and recursive YAML aliases stay shared and recursive."""
    result = Canonical(None)
    copies: dict[tuple[int, _Keys], Json] = {}
    pending: list[tuple[Json, Json, _Keys, Pointer]] = []

    def copy(node: Json, keys: _Keys, path: Pointer) -> Json:
        if not isinstance(node, dict | list):
            return node
        memo = (id(node), keys)
        if memo not in copies:
            copies[memo] = {} if isinstance(node, dict) else []
            pending.append((node, copies[memo], keys, path))
        return copies[memo]

    result.data = copy(data, _Keys.FIELDS, ())
    while pending:
        node, target, keys, path = pending.pop()
        if isinstance(node, list) and isinstance(target, list):
            target.extend(copy(item, keys, (*path, i)) for i, item in enumerate(node))
        elif isinstance(node, dict) and isinstance(target, dict):
            _fill(result, node, target, keys, path, copy)
    return result


_Copy = Callable[[Json, _Keys, Pointer], Json]


def _fill(
    result: Canonical, node: dict[str, Json], target: dict[str, Json], keys: _Keys, path: Pointer, copy: _Copy
) -> None:
    written: dict[str, str] = {}
    for key, value in node.items():
        name = snake_case(key) if keys is _Keys.FIELDS and isinstance(key, str) else key
        if name in written:
            result.collisions.append(Collision((*path, name), (written[name], key)))
        written[name] = key
        target[name] = copy(value, _child_keys(keys, name), (*path, name))
    if any(name != key for name, key in written.items()):
        result.spelled[id(target)] = written


def _child_keys(keys: _Keys, name: str) -> _Keys:
    if keys is _Keys.DATA or (keys is _Keys.FIELDS and name in _DATA_FIELDS):
        return _Keys.DATA
    if keys is _Keys.FIELDS and name in _MAP_FIELDS:
        return _Keys.NAMES
    return _Keys.FIELDS
