from __future__ import annotations

import json

import pytest

from sidecar.opa.strict_json import StrictJSONError, loads_object


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"result": true',
        b'{"result": true} {"result": false}',
        b'{"result": true}x',
        b'{"result": NaN}',
        b'{"result": Infinity}',
        b'{"result": "\\ud800"}',
        b'{"result": "\xff"}',
        b'{"result": true, "result": false}',
        b'{"result": {"allowed": false, "allowed": true}}',
        b'[{"result": true}]',
        b'"result"',
        b"true",
        b"null",
        b"{'result': true}",
    ],
)
def test_ambiguous_or_invalid_json_is_refused(data: bytes) -> None:
    with pytest.raises(StrictJSONError):
        loads_object(data)


def test_plain_object_parses() -> None:
    assert loads_object(b'{"result":{"allowed":true,"n":100000000000000000000000000001}}\n') == {
        "result": {"allowed": True, "n": 100000000000000000000000000001}
    }


def test_error_text_quotes_no_content() -> None:
    with pytest.raises(StrictJSONError) as info:
        loads_object(b'{"result": "Bearer secret-token-123" x}')
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        b'{"result":true}\n',  # compact: the fast path
        b'{"result": {"allowed": true, "headers": {"x-a": "b"}}}',  # spaced: the full pass
        b'{"result":{"allowed":true,"n":1e3,"s":"\\u003c"}}\n',  # spellings orjson writes otherwise
    ],
)
def test_both_paths_agree(data: bytes) -> None:
    assert loads_object(data) == json.loads(data)


def test_a_duplicate_never_takes_the_fast_path() -> None:
    with pytest.raises(StrictJSONError):
        loads_object(b'{"result":true,"result":true}\n')  # same value twice: still ambiguous
