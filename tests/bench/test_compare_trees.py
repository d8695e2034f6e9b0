"""bench.compare runs each revision from a tree of its own; '.' is the working tree."""

from __future__ import annotations

from pathlib import Path

from bench.compare import export
from bench.services import REPO


def test_the_working_tree_is_used_as_it_is(tmp_path: Path) -> None:
    assert export(".", tmp_path) == REPO
    assert list(tmp_path.iterdir()) == []


def test_a_revision_is_exported_whole_into_its_own_directory(tmp_path: Path) -> None:
    tree = export("HEAD", tmp_path)
    assert tree.parent == tmp_path and tree != REPO
    assert (tree / "sidecar" / "__main__.py").is_file()
    assert (tree / "sidecar" / "_proto").is_dir()  # the generated code the sidecar imports
    assert [p.name for p in tmp_path.iterdir()] == [tree.name]  # the archive itself is gone
