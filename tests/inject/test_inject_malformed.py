"""Malformed input is refused, never a crash: every field of the corpus, one at a time,
replaced by a value of another type, in both modes."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from sidecar.inject.options import InjectOptions
from sidecar.inject.stream import InjectError, Source, dump, inject
from tests.inject.corpus import workloads

WRONG_TYPES: list[Any] = [None, 3, "x", [], {}, [1], {"a": 1}, True, [None], [[]]]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutations() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    rng = random.Random(20)
    corpus = workloads()
    for name in sorted(corpus):
        for position, document in enumerate(corpus[name]):
            for path in _paths(document):
                documents = copy.deepcopy(corpus[name])
                node: Any = documents[position]
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = rng.choice(WRONG_TYPES)
                yield f"{name}[{position}]{list(path)}", documents


@pytest.mark.parametrize("mode", ["envoy", "istio"])
def test_every_field_of_the_wrong_type_is_refused_or_passed_through(mode: str) -> None:
    crashes, refused, total = [], 0, 0
    for label, documents in _mutations():
        total += 1
        try:
            dump(inject([Source("stdin", yaml.safe_dump_all(documents))], InjectOptions(mode=mode)))
        except InjectError as exc:
            refused += 1
            assert "cannot inject" in str(exc) or "not a Kubernetes object" in str(exc) or "items" in str(exc)
        except Exception as exc:
            crashes.append(f"{label}: {type(exc).__name__}: {exc}")
    assert crashes == [], "\n".join(crashes[:20])
    assert total > 800 and refused > total // 4, (total, refused)
