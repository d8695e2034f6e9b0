"""Files to documents: YAML (several documents per file), JSON, and configs held
as strings in a Kubernetes ConfigMap (Istio's ``mesh``, an ``envoy.yaml``).

Each document keeps the line of every key and the keys that occur twice in
one mapping, so findings can point at a line and repeated keys can be reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sidecar.lint.findings import Pointer
from sidecar.lint.values import Json, as_dict

SUFFIXES = (".yaml", ".yml", ".json")
_EMBEDDED_KEYS = ("mesh",)  # ConfigMap keys read as configs whatever their name
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Line numbers are looked up by the string form of each pointer segment.
_Key = tuple[str, ...]

# libyaml's parser when PyYAML was built with it; both keep node positions.
_BaseLoader: type[yaml.CSafeLoader | yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LoadError(Exception):
    """A file that cannot be read or parsed; the message names the file."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Document:
    file: str
    index: int  # position in the file's YAML stream, from 0
    data: Json
    base: Pointer = ()  # where ``data`` sits in that document (for an embedded config)
    lines: Mapping[_Key, int] = field(default_factory=dict)  # pointer from the document root -> line
    duplicates: tuple[Pointer, ...] = ()  # relative to ``data``
    annotations: Mapping[str, str] = field(default_factory=dict)  # of the Kubernetes object holding it

    def line_of(self, path: Pointer) -> int | None:
        """The line of ``path`` (relative to ``data``), else of its nearest ancestor."""
        key = tuple(str(part) for part in (*self.base, *path))
        for end in range(len(key), -1, -1):
            line = self.lines.get(key[:end])
            if line is not None:
                return line
        return None


def discover(paths: Sequence[str]) -> Iterator[Path | LoadError]:
    """The files to lint: each file named, and every YAML/JSON file under each directory."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix in SUFFIXES and not _hidden(p.relative_to(path))
            )
            yield from found
        elif path.exists():
            yield path
        else:
            yield LoadError(raw, "no such file or directory")


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def load_file(path: Path) -> list[Document]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(name, f"cannot read: {exc}") from None
    parsed = _parse_json(name, text) if path.suffix == ".json" else _parse_yaml(name, text)
    return [embedded for document, blocks in parsed for embedded in _with_embedded(document, blocks)]


def _parse_json(file: str, text: str) -> list[_Parsed]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(file, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:  # JSON is YAML: reuse the YAML pass for line numbers and repeated keys
        [(document, _)] = _parse_yaml(file, text)
    except (LoadError, ValueError):
        return [(Document(file, 0, data), frozenset())]
    return [(Document(file, 0, data, lines=document.lines, duplicates=document.duplicates), frozenset())]


# A document and the keys whose values are block scalars (``|`` or ``>``).
_Parsed = tuple[Document, frozenset[_Key]]


def _parse_yaml(file: str, text: str, base: Pointer = (), line_offset: int = 0) -> list[_Parsed]:
    documents: list[_Parsed] = []
    loader = _BaseLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            index = _NodeIndex(base, line_offset)
            if node is not None:
                index.visit(node, ())
            data = loader.construct_document(node) if node is not None else None
            document = Document(file, len(documents), data, base, index.lines, tuple(index.duplicates))
            documents.append((document, frozenset(index.block_scalars)))
    except yaml.YAMLError as exc:
        raise LoadError(file, f"invalid YAML: {_one_line(exc)}") from None
    finally:
        loader.dispose()
    return documents


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).replace('in "<unicode string>", ', "").split())


class _NodeIndex:
    """Lines of keys and repeated keys, read from the node tree before
    construction (which flattens ``<<`` merges into the mappings)."""

    def __init__(self, base: Pointer, line_offset: int) -> None:
        self.base = tuple(str(part) for part in base)
        self.offset = line_offset
        self.lines: dict[_Key, int] = {}
        self.duplicates: list[Pointer] = []
        self.block_scalars: set[_Key] = set()
        self._active: set[int] = set()  # guards against recursive aliases

    def visit(self, node: yaml.Node, path: Pointer, merged: bool = False) -> None:
        key = self.base + tuple(str(part) for part in path)
        if merged:
            self.lines.setdefault(key, node.start_mark.line + 1 + self.offset)
        else:
            self.lines[key] = node.start_mark.line + 1 + self.offset
        if id(node) in self._active:
            return
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path, merged)
            elif isinstance(node, yaml.SequenceNode):
                for position, item in enumerate(node.value):
                    self.visit(item, (*path, position), merged)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Pointer, merged: bool) -> None:
        seen: set[str] = set()
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
                continue
            name = str(key_node.value)
            if name in seen and not merged:
                self.duplicates.append((*path, name))
            seen.add(name)
            self.visit(value_node, (*path, name), merged)
            key = (*self.base, *(str(part) for part in path), name)
            if not merged:
                self.lines[key] = key_node.start_mark.line + 1 + self.offset
            if isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">"):
                self.block_scalars.add(key)
        for merge in merges:  # explicit keys win over merged ones
            self.visit(merge, path, merged=True)


def _with_embedded(document: Document, block_scalars: frozenset[_Key]) -> list[Document]:
    """The document, plus any config held as a string in a ConfigMap's data."""
    data = as_dict(document.data)
    if data is None:
        return [document]
    annotations = _annotations(data)
    document = Document(
        document.file, document.index, data, document.base, document.lines, document.duplicates, annotations
    )
    entries = as_dict(data.get("data")) if data.get("kind") == "ConfigMap" else None
    if not entries:
        return [document]
    found = [document]
    for key, value in entries.items():
        if not isinstance(value, str) or not (key in _EMBEDDED_KEYS or key.endswith(SUFFIXES)):
            continue
        line = document.lines.get(("data", key), 0)
        block = ("data", key) in block_scalars
        try:
            inner = _parse_yaml(document.file, value, ("data", key), line if block else 0)
        except LoadError as exc:
            raise LoadError(document.file, f"document {document.index}, data.{key}: {exc.reason}") from None
        for part, _ in inner:
            lines = part.lines if block else {k: line for k in part.lines}
            found.append(
                Document(
                    document.file, document.index, part.data, part.base, lines, part.duplicates, annotations
                )
            )
    return found


def _annotations(data: Mapping[str, Json]) -> dict[str, str]:
    metadata = as_dict(data.get("metadata")) or {}
    annotations = as_dict(metadata.get("annotations")) or {}
    return {str(k): str(v) for k, v in annotations.items()}
