"""Seed corpora for the fuzzers (tests.adversarial.fuzz_input, fuzz_result): a prefix byte
selects each fuzzer's raw mode, so a seed is taken as it is. Kept apart from the fuzzers so
that writing a corpus does not import atheris or instrument anything."""

from __future__ import annotations

from pathlib import Path

from tests.check_requests import check_request


def input_seeds() -> list[bytes]:
    """Realistic requests to start from: a prefix byte selects the raw-protobuf mode."""
    requests = [
        check_request("GET", "/orders?id=7&id=8&x", headers={"x-user": "alice"}),
        check_request(
            "POST", "/orders", headers={"content-type": "application/json"}, body='{"item": "book", "n": 3}'
        ),
        check_request(
            "POST", "/form", headers={"content-type": "application/x-www-form-urlencoded"}, body="a=1&b=%20"
        ),
        check_request(
            "POST",
            "/upload",
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
            body='--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n--XyZ--\r\n',
        ),
    ]
    return [b"\x01" + r.SerializeToString() for r in requests]


def result_seeds() -> list[bytes]:
    """Real answers to start from: a prefix byte selects the raw-body mode."""
    answers = [
        b'{"result":true}',
        b'{"result":false,"decision_id":"d"}',
        b"{}",
        b'{"result":{"allowed":true,"headers":{"x-user":"alice"},"response_headers_to_add":[{"a":["1","2"]}]}}',
        b'{"result":{"allowed":false,"http_status":429,"body":"slow down","headers":{"retry-after":"7"}}}',
        b'{"result":{"allowed":true,"query_parameters_to_set":{"q":"1"},"query_parameters_to_remove":["x"],'
        b'"request_headers_to_remove":["cookie"],"dynamic_metadata":{"k":[1,{"n":null}]}}}',
    ]
    return [b"\x01" + answer for answer in answers]


def write_corpus(directory: Path, seeds: list[bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(seeds):
        (directory / f"seed-{number}").write_bytes(seed)
    return directory
