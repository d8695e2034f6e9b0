from __future__ import annotations

from typing import Any

import pytest

from sidecar.signals import JsonPointer, carries_nothing, missing_signal, parse_pointers

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


def test_missing_signal_reports_absent_and_empty_values() -> None:
    present = parse_pointers(["/attributes/source/principal", "/parsed_body/ok", "/parsed_body/zero"])
    assert missing_signal(DOC, present) is None
    for pointer in [
        "/attributes/request/http/headers/cookie",
        "/attributes/request/http/headers/x-empty",
        "/parsed_body/items",
        "/parsed_body/nested",
    ]:
        detail = missing_signal(DOC, (*present, JsonPointer.parse(pointer)))
        assert detail == f"required signal {pointer} is missing or carries nothing"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        " ",
        "\t \t",
        ",",
        ", ,",
        " ,\t, ",
        ",,,,",
        "\u00a0",  # no-break space
        "\u3000,\u2003",  # ideographic and em spaces
        [],
        ["", " "],
        [None, ",", []],
        {},
        {"a": "", "b": {"c": [" , "]}},
    ],
)
def test_values_that_carry_nothing(value: Any) -> None:
    assert carries_nothing(value)


@pytest.mark.parametrize(
    "value",
    [
        "x",
        " x ",
        ",x",
        "x,",
        ", ,x, ,",
        "Bearer t",
        "0",
        False,
        0,
        0.0,
        ["", "x"],
        {"a": "", "b": False},
        [[[1]]],
    ],
)
def test_values_that_carry_something(value: Any) -> None:
    assert not carries_nothing(value)


def test_a_deeply_nested_value_is_judged_without_recursion() -> None:
    empty: Any = ""
    full: Any = "x"
    for _ in range(100_000):
        empty, full = [empty], {"k": full}
    assert carries_nothing(empty)
    assert not carries_nothing(full)


ATTESTED = [
    "/attributes/source/principal",
    "/attributes/source/certificate",
    "/attributes/source/address/socketAddress/address",
    "/attributes/destination/principal",
    "/attributes/tlsSession/sni",
    "/attributes/metadataContext/filterMetadata/envoy.filters.http.jwt_authn",
    "/attributes/routeMetadataContext",
    "/attributes/contextExtensions/tenant",
    "/source_principal",
]
CALLER_WRITTEN = [
    "/attributes/request/http/headers/authorization",
    "/attributes",
    "/parsed_body/user",
    "/source",
    "/subject",
]


@pytest.mark.parametrize("pointer", ATTESTED)
def test_envoy_attested_pointers(pointer: str) -> None:
    assert JsonPointer.parse(pointer).envoy_attested


@pytest.mark.parametrize("pointer", CALLER_WRITTEN)
def test_pointers_any_caller_can_fill(pointer: str) -> None:
    assert not JsonPointer.parse(pointer).envoy_attested


def test_an_unattested_document_never_meets_an_envoy_attested_signal() -> None:
    principal = parse_pointers(["/attributes/source/principal"])
    assert missing_signal(DOC, principal) is None  # from Envoy: the principal is there
    detail = missing_signal(DOC, principal, unattested="the caller wrote it")
    assert detail == (
        "required signal /attributes/source/principal can only come from Envoy's gRPC check: "
        "the caller wrote it"
    )
    authorization = parse_pointers(["/attributes/request/http/headers/authorization"])
    assert missing_signal(DOC, authorization, unattested="the caller wrote it") is None


def test_env_list_splits_on_commas() -> None:
    assert [p.text for p in parse_pointers(["/a", " /b ", ""])] == ["/a", "/b"]
