from __future__ import annotations

from typing import Any

import pytest

from sidecar.signals import JsonPointer, first_missing, parse_pointers

DOC: dict[str, Any] = {
    "attributes": {
        "source": {"principal": "spiffe://example.org/ns/shop/sa/web"},
        "request": {
            "http": {"headers": {"authorization": "Bearer x", "x-empty": "", "a/b": "slash", "t~n": "tilde"}}
        },
    },
    "parsed_path": ["v1", "orders"],
    "parsed_body": {"items": [], "ok": False, "zero": 0, "nested": {}},
}


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("/attributes/source/principal", "spiffe://example.org/ns/shop/sa/web"),
        ("/attributes/request/http/headers/a~1b", "slash"),
        ("/attributes/request/http/headers/t~0n", "tilde"),
        ("/parsed_path/1", "orders"),
        ("/parsed_path/2", None),
        ("/parsed_path/01", None),
        ("/parsed_path/x", None),
        ("/missing/deeper", None),
        ("/parsed_body/ok", False),
    ],
)
def test_resolve(pointer: str, value: Any) -> None:
    assert JsonPointer.parse(pointer).resolve(DOC) == value


@pytest.mark.parametrize("bad", ["attributes/source", "~", "/a~2b", "/a~"])
def test_malformed_pointers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        JsonPointer.parse(bad)


def test_first_missing_reports_absent_and_empty_values() -> None:
    present = parse_pointers(["/attributes/source/principal", "/parsed_body/ok", "/parsed_body/zero"])
    assert first_missing(DOC, present) is None
    for pointer in [
        "/attributes/request/http/headers/cookie",
        "/attributes/request/http/headers/x-empty",
        "/parsed_body/items",
        "/parsed_body/nested",
    ]:
        assert first_missing(DOC, (*present, JsonPointer.parse(pointer))) == pointer


def test_env_list_splits_on_commas() -> None:
    assert [p.text for p in parse_pointers(["/a", " /b ", ""])] == ["/a", "/b"]
