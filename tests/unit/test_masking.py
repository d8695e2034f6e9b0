"""Masking of the logged input: every place a secret can appear in the input document."""

from __future__ import annotations

import base64
import io
from typing import Any

import orjson
import pytest

from sidecar.authorizer import Outcome
from sidecar.decision_log import DecisionLog
from sidecar.masking import DEFAULT_MASKED_HEADERS, MASK, NOT_SERIALISABLE, Masker
from sidecar.signals import parse_pointers
from sidecar.verdict import Allow

TARGET = "/login?page=2&access_token=qs-secret-1&access%5Ftoken=qs-secret-2"
MASKED_TARGET = f"/login?page=2&access_token={MASK}&access%5Ftoken={MASK}"
SECRET_VALUE = "s3cr3t-value"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _document(headers: dict[str, str]) -> dict[str, Any]:
    entries = [{"key": k, "value": v, "rawValue": _b64(v)} for k, v in headers.items()]
    return {
        "attributes": {
            "request": {
                "http": {
                    "path": TARGET,
                    "query": TARGET.partition("?")[2],
                    "headers": dict(headers),
                    "headerMap": {"headers": entries},
                }
            }
        },
        "parsed_query": {"access_token": ["qs-secret-1", "qs-secret-2"], "page": ["2"]},
    }


def _masker() -> Masker:
    return Masker(pointers=parse_pointers(["/parsed_query/access_token"]))


@pytest.mark.parametrize(
    "header",
    [
        *DEFAULT_MASKED_HEADERS,
        "X-Vault-Token",  # any case
    ],
)
def test_every_default_credential_header_is_masked_in_headers_and_header_map(header: str) -> None:
    masked = _masker().mask(_document({header: SECRET_VALUE, "x-other": "kept"}))

    http = masked["attributes"]["request"]["http"]
    assert http["headers"] == {header: MASK, "x-other": "kept"}
    secret_entry, other_entry = http["headerMap"]["headers"]
    assert secret_entry == {"key": header, "value": MASK, "rawValue": MASK}
    assert other_entry["value"] == "kept"
    assert SECRET_VALUE not in orjson.dumps(masked).decode()


def test_the_default_set_covers_the_common_credential_headers() -> None:
    expected = {
        "x-vault-token",
        "x-auth-token",
        "x-amz-security-token",
        "x-goog-iam-authorization-token",
        "x-csrf-token",
        "private-token",
        "x-api-token",
        "apikey",
        "x-access-token",
        "x-refresh-token",
        "x-client-secret",
    }
    assert expected <= set(DEFAULT_MASKED_HEADERS)


def test_a_masked_query_parameter_is_masked_wherever_the_raw_target_appears() -> None:
    headers = {":path": TARGET, "x-envoy-original-path": TARGET}
    masked = _masker().mask(_document(headers))

    http = masked["attributes"]["request"]["http"]
    assert http["path"] == MASKED_TARGET
    assert http["query"] == MASKED_TARGET.partition("?")[2]
    assert http["headers"][":path"] == http["headers"]["x-envoy-original-path"] == MASKED_TARGET
    entries = {e["key"]: e for e in http["headerMap"]["headers"]}
    for name in (":path", "x-envoy-original-path"):
        assert entries[name]["value"] == MASKED_TARGET
        assert base64.b64decode(entries[name]["rawValue"]).decode() == MASKED_TARGET
    assert masked["parsed_query"] == {"access_token": [MASK, MASK], "page": ["2"]}
    assert "qs-secret" not in orjson.dumps(masked).decode()


def test_an_unreadable_raw_target_is_masked_whole() -> None:
    document = _document({":path": TARGET})
    document["attributes"]["request"]["http"]["headerMap"]["headers"][0]["rawValue"] = "not base64!"
    masked = _masker().mask(document)
    assert masked["attributes"]["request"]["http"]["headerMap"]["headers"][0]["rawValue"] == MASK


def test_without_masked_parameters_the_target_is_left_as_is() -> None:
    masked = Masker().mask(_document({":path": TARGET}))
    assert masked["attributes"]["request"]["http"]["path"] == TARGET


def test_a_value_that_cannot_be_serialised_is_replaced_alone() -> None:
    document = _document({"x-other": "kept"})
    document["parsed_body"] = {
        "huge": 2**70,
        "fine": 7,
        "lone_surrogate": "a\ud800b",
        "nested": [1, {"deep": -(2**64)}],
        "bad\udc80key": "kept value",
    }

    masked = _masker().mask(document)

    assert masked["parsed_body"] == {
        "huge": NOT_SERIALISABLE,
        "fine": 7,
        "lone_surrogate": NOT_SERIALISABLE,
        "nested": [1, {"deep": NOT_SERIALISABLE}],
        "bad\\udc80key": "kept value",
    }
    assert masked["attributes"]["request"]["http"]["headers"] == {"x-other": "kept"}
    assert masked["parsed_query"]["access_token"] == [MASK, MASK]
    orjson.dumps(masked)  # the log line can be written


def test_the_decision_log_line_keeps_the_rest_of_the_input() -> None:
    stream = io.BytesIO()
    log = DecisionLog("envoy/authz/allow", stream, masker=_masker())
    document = _document({"authorization": "Bearer " + SECRET_VALUE})
    document["parsed_body"] = {"n": 2**80, "user": "alice"}

    log.record("d-1", Outcome(Allow(), input=document), 0.001)
    assert log.flush(5.0)

    [line] = stream.getvalue().splitlines()
    entry = orjson.loads(line)
    assert entry["input"]["parsed_body"] == {"n": NOT_SERIALISABLE, "user": "alice"}
    assert entry["input"]["attributes"]["request"]["http"]["path"] == MASKED_TARGET
    assert SECRET_VALUE not in line.decode()
    assert "qs-secret" not in line.decode()
    log.close()


def test_the_original_document_is_left_untouched() -> None:
    document = _document({"authorization": SECRET_VALUE, ":path": TARGET})
    before = orjson.dumps(document)
    _masker().mask(document)
    assert orjson.dumps(document) == before
