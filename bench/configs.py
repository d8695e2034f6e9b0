"""Fill in the configuration files that live beside this module."""

from __future__ import annotations

from pathlib import Path
from string import Template

_HERE = Path(__file__).parent


def render(name: str, target: Path, **values: object) -> Path:
    """Write ``name`` with its $-placeholders replaced to ``target``."""
    text = Template((_HERE / name).read_text()).substitute({k: str(v) for k, v in values.items()})
    target.write_text(text)
    return target
