"""Running inject as its users do: YAML text through `opa-sidecar inject`."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.cli import main


def run_inject(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    documents: list[dict[str, Any]] | str | bytes,
    *flags: str,
) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `opa-sidecar inject FLAGS` fed the documents on stdin."""
    if isinstance(documents, list):
        documents = yaml.safe_dump_all(documents, sort_keys=False)
    raw = documents.encode() if isinstance(documents, str) else documents
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    status = main(["inject", *flags])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def load(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    found = []
    for document in documents:
        items = document.get("items") if document.get("kind") == "List" else [document]
        found += [d for d in items or [] if d.get("kind") == kind]
    return found


def pod_spec_of(document: dict[str, Any]) -> dict[str, Any]:
    path = {
        "Pod": (),
        "CronJob": ("spec", "jobTemplate", "spec", "template"),
    }.get(document["kind"], ("spec", "template"))
    node: Any = document
    for key in path:
        node = node[key]
    spec: dict[str, Any] = node["spec"]
    return spec


def write(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path
