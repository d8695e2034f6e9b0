"""Pieces of the stand-in OPA that its HTTP tests reach only partly."""

from __future__ import annotations

import gzip

import pytest

from tests.opa_server.cli import Address, parse_addr
from tests.opa_server.evaluation import BadPath, parse_data_path, parse_engine_errors, ref_string
from tests.opa_server.wire import BadInput, flag, gunzip


def test_data_path_to_reference() -> None:
    assert parse_data_path("a/b/0/-3/+4/007") == ("a", "b", 0, -3, 4, 7)
    assert parse_data_path("/a//b/") == ("a", "b")
    assert parse_data_path("a%2Fb/x%20y") == ("a/b", "x y")
    assert parse_data_path("99999999999999999999") == ("99999999999999999999",)  # beyond int64: a string
    with pytest.raises(BadPath):
        parse_data_path("a/x%22y")


def test_reference_display() -> None:
    assert ref_string(("envoy", "authz", "allow")) == "data.envoy.authz.allow"
    assert ref_string(("a-b", 0, "c")) == 'data["a-b"][0].c'


def test_engine_errors_become_opa_errors() -> None:
    [conflict] = parse_engine_errors(
        "policies/p.rego:5: eval_conflict_error: complete rules must not produce multiple outputs"
    )
    assert conflict == {
        "code": "eval_conflict_error",
        "message": "complete rules must not produce multiple outputs",
        "location": {"file": "policies/p.rego", "row": 5, "col": 1},
    }
    two = parse_engine_errors(
        "2 errors occurred:\nb.rego:3: rego_unsafe_var_error: var y is unsafe\n"
        "b.rego:4: rego_unsafe_var_error: var w is unsafe"
    )
    assert [e["message"] for e in two] == ["var y is unsafe", "var w is unsafe"]
    assert [e["location"]["row"] for e in two] == [3, 4]
    [typed] = parse_engine_errors(
        "1 error occurred: 1:7: rego_type_error: undefined ref: data.t[0]\n\tdata.t[0]"
    )
    assert typed["location"] == {"file": "", "row": 1, "col": 7}
    assert typed["message"] == "undefined ref: data.t[0]\n\tdata.t[0]"
    [query] = parse_engine_errors("1/0: eval_builtin_error: div: divide by zero")
    assert query == {"code": "eval_builtin_error", "message": "div: divide by zero"}


def test_boolean_parameters() -> None:
    assert flag([""]) and flag(["TRUE"]) and flag(["no", "true"])
    assert not flag([]) and not flag(["1"]) and not flag(["yes"])


def test_addresses() -> None:
    assert parse_addr("127.0.0.1:8181") == Address("127.0.0.1", 8181)
    assert parse_addr(":0") == Address("", 0)
    assert parse_addr("[::1]:9") == Address("::1", 9)
    assert parse_addr("http://localhost:80") == Address("localhost", 80)
    assert parse_addr("unix:///run/opa.sock") == Address(unix_path="/run/opa.sock")
    for bad in ("localhost", "host:port", "unix://@abstract", "h:70000"):
        with pytest.raises(ValueError):
            parse_addr(bad)


def test_gunzip_limits_and_errors() -> None:
    packed = gzip.compress(b"x" * 1000)
    assert gunzip(packed) == b"x" * 1000
    with pytest.raises(BadInput, match="gzip payload too large"):
        gunzip(packed, limit=999)
    with pytest.raises(BadInput, match="unexpected EOF"):
        gunzip(packed[:-12])
    with pytest.raises(BadInput, match="could not decompress the body"):
        gunzip(b"not gzip")
