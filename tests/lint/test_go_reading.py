"""How values are read as istiod (jsonpb over sigs.k8s.io/yaml) and the
Kubernetes API server read them."""

from __future__ import annotations

import pytest
import yaml

from sidecar.lint.go_reading import (
    go_parse_bool,
    is_gateway_duration,
    json_name,
    proto_fields,
    refused_as_bool,
    yaml_true,
)


@pytest.mark.parametrize("word", ["true", "True", "TRUE", "yes", "YES", "on", "On", "y", "Y"])
def test_yaml_1_1_words_are_true(word: str) -> None:
    assert yaml_true(yaml.safe_load(f"v: {word}")["v"])
    assert not refused_as_bool(yaml.safe_load(f"v: {word}")["v"])


@pytest.mark.parametrize("written", ['"true"', "'yes'", '"1"', "1", "[true]"])
def test_strings_numbers_and_lists_are_refused_for_a_bool(written: str) -> None:
    value = yaml.safe_load(f"v: {written}")["v"]
    assert not yaml_true(value) and refused_as_bool(value)


@pytest.mark.parametrize("word", ["false", "no", "off", "n", "N"])
def test_false_words_are_false_and_readable(word: str) -> None:
    value = yaml.safe_load(f"v: {word}")["v"]
    assert not yaml_true(value) and not refused_as_bool(value)


def test_go_parse_bool_takes_its_own_words_only() -> None:
    assert all(go_parse_bool(word) for word in ("1", "t", "T", "true", "True", "TRUE"))
    assert not any(go_parse_bool(word) for word in ("yes", "on", "y", " true", "tRUE"))


def test_proto_fields_take_either_name_and_the_json_name_wins() -> None:
    assert json_name("include_request_body_in_check") == "includeRequestBodyInCheck"
    snake_first = proto_fields({"fail_open": True, "failOpen": False})
    camel_first = proto_fields({"failOpen": False, "fail_open": True})
    for fields in (snake_first, camel_first):
        assert fields.get("failOpen") is False and fields.key("failOpen") == "failOpen"
        assert fields.both_ways == (("fail_open", "failOpen"),)
    assert proto_fields({"status_on_error": "503"}).key("statusOnError") == "status_on_error"


@pytest.mark.parametrize(
    ("text", "valid"), [("250ms", True), ("1h30m", True), ("0.25s", False), ("250", False)]
)
def test_gateway_api_durations_are_whole_units(text: str, valid: bool) -> None:
    assert is_gateway_duration(text) is valid
