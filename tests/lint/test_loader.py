"""Loading: documents, lines, repeated keys, embedded configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.lint.loader import LoadError, load_file
from sidecar.lint.tree import walk


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_documents_keep_their_index_even_when_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "multi.yaml", "a: 1\n---\n---\nb:\n  c: 2\n")
    documents = load_file(path)
    assert [d.data for d in documents] == [{"a": 1}, None, {"b": {"c": 2}}]
    assert [d.index for d in documents] == [0, 1, 2]
    assert documents[2].line_of(("b", "c")) == 5
    assert documents[2].line_of(("b", "c", "deeper", 3)) == 5  # nearest known ancestor


def test_repeated_keys_are_recorded_but_merge_keys_are_not(tmp_path: Path) -> None:
    text = "base: &base {x: 1, y: 2}\nuse:\n  <<: *base\n  x: 3\nagain:\n  k: 1\n  k: 2\n"
    (document,) = load_file(write(tmp_path, "dup.yaml", text))
    assert document.data == {"base": {"x": 1, "y": 2}, "use": {"x": 3, "y": 2}, "again": {"k": 2}}
    assert document.duplicates == (("again", "k"),)
    assert document.line_of(("use", "x")) == 4  # the explicit key, not the merged one
    assert document.line_of(("again", "k")) == 7  # the value that is used


def test_json_gets_lines_too(tmp_path: Path) -> None:
    (document,) = load_file(write(tmp_path, "c.json", '{\n  "a": {\n    "b": [true]\n  }\n}\n'))
    assert document.data == {"a": {"b": [True]}}
    assert document.line_of(("a", "b", 0)) == 3


def test_json_that_yaml_cannot_read_still_loads(tmp_path: Path) -> None:
    # PyYAML refuses escaped surrogate pairs; JSON decodes them
    (document,) = load_file(write(tmp_path, "emoji.json", '{"a": "\\ud83d\\ude00"}'))
    assert document.data == {"a": "\U0001f600"}
    assert document.line_of(("a",)) is None


def test_configmap_strings_are_documents_with_outer_lines(tmp_path: Path) -> None:
    text = (
        "kind: ConfigMap\n"
        "metadata:\n  annotations: {team: edge}\n"
        "data:\n"
        "  mesh: |\n    extensionProviders:\n    - name: a\n"
        "  envoy.json: '{\"static_resources\": {}}'\n"
        "  README: 'not: parsed'\n"
    )
    outer, mesh, envoy = load_file(write(tmp_path, "cm.yaml", text))
    assert mesh.base == ("data", "mesh") and mesh.data == {"extensionProviders": [{"name": "a"}]}
    assert mesh.line_of(("extensionProviders", 0, "name")) == 7
    # not a block scalar: every line of it is the key's line
    assert envoy.base == ("data", "envoy.json") and envoy.line_of(("static_resources",)) == 8
    assert mesh.annotations == envoy.annotations == {"team": "edge"}
    assert outer.index == mesh.index == envoy.index == 0


def test_recursive_aliases_do_not_hang(tmp_path: Path) -> None:
    (document,) = load_file(write(tmp_path, "loop.yaml", "a: &a\n  b: *a\n"))
    assert sum(1 for _ in walk(document.data)) == 3  # a, a.b, and a.b seen once more


def test_parse_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as raised:
        load_file(write(tmp_path, "bad.yaml", "a: [1,\nb: 2\n"))
    assert raised.value.reason == (
        "invalid YAML: while parsing a flow sequence line 1, column 4 "
        "did not find expected ',' or ']' line 3, column 1"
    )


def test_a_byte_order_mark_is_not_part_of_the_document(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert [d.data for d in load_file(path)] == [{"a": 1}]
