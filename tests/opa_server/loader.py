"""Loading policies and data the way `opa run --server PATH...` does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from opa_bindings import OpaEngine, OpaError

DATA_SUFFIXES: Final = (".json", ".yaml", ".yml")


class LoadError(Exception):
    """Policies or data that OPA would refuse to start with."""


def load_paths(engine: OpaEngine, paths: Sequence[str]) -> None:
    """Load every path, then compile everything once so bad policies fail now, not per request."""
    for given in paths:
        root = Path(given)
        if root.is_dir():
            for file in sorted(root.rglob("*")):
                if file.is_file():
                    _load_file(engine, file, file.parent.relative_to(root).parts)
        elif root.is_file():
            _load_file(engine, root, ())
        else:
            raise LoadError(f"{given}: no such file or directory")
    try:
        engine.eval_query("__r = true")
    except OpaError as exc:
        raise LoadError(exc.message) from None


def _load_file(engine: OpaEngine, file: Path, data_path: tuple[str, ...]) -> None:
    if file.suffix == ".rego":
        _load_policy(engine, file)
    elif file.suffix in DATA_SUFFIXES:
        _load_data(engine, file, data_path)
    # Anything else is ignored, as by OPA's loader.


def _load_policy(engine: OpaEngine, file: Path) -> None:
    module_id = str(file)  # OPA names modules by the path as given; errors quote it
    try:
        engine.add_policy(module_id, file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"{module_id}: {exc}") from None
    except OpaError as exc:
        message = exc.message if module_id in exc.message else f"{module_id}: {exc.message}"
        raise LoadError(message) from None


def _read_data(file: Path) -> Any:
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def _load_data(engine: OpaEngine, file: Path, data_path: tuple[str, ...]) -> None:
    try:
        value = _read_data(file)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise LoadError(f"{file}: {exc}") from None
    if value is None:
        return  # an empty YAML document adds nothing
    if not data_path and not isinstance(value, dict):
        raise LoadError(f"{file}: root document must be object")
    # Nest by hand rather than using the engine's dotted path: directory names may contain dots.
    for key in reversed(data_path):
        value = {key: value}
    try:
        engine.add_data(value)
    except OpaError as exc:
        raise LoadError(f"{file}: {exc.message}") from None
