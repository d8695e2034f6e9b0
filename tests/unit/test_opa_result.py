"""The result interpreter: only a well-formed yes allows."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.opa.result import interpret
from sidecar.verdict import Allow, Deny, DenyReason


def deny_reason(answer: dict[str, Any]) -> DenyReason:
    verdict = interpret(answer)
    assert isinstance(verdict, Deny), verdict
    return verdict.reason


def test_true_allows() -> None:
    assert interpret({"result": True}) == Allow()


def test_false_is_a_policy_deny_with_default_403() -> None:
    verdict = interpret({"result": False})
    assert isinstance(verdict, Deny)
    assert (verdict.reason, verdict.http_status, verdict.body) == (DenyReason.POLICY_DENIED, 403, "")


@pytest.mark.parametrize("answer", [{}, {"decision_id": "abc"}, {"warning": {"code": "api_usage_warning"}}])
def test_no_result_is_undefined(answer: dict[str, Any]) -> None:
    assert deny_reason(answer) is DenyReason.UNDEFINED


@pytest.mark.parametrize("result", [None, "true", 1, 0, 1.0, [True], [], "allow", {"allow": True}])
def test_results_of_the_wrong_type_deny(result: Any) -> None:
    assert deny_reason({"result": result}) is DenyReason.INVALID_RESULT


@pytest.mark.parametrize(
    "result",
    [
        {},
        {"allowed": "true"},
        {"allowed": 1},
        {"allowed": None},
        {"allowed": True, "headers": "x-a: b"},
        {"allowed": True, "headers": {"x-a": 1}},
        {"allowed": True, "headers": {"x-a": ["ok", 2]}},
        {"allowed": True, "headers": {"x-a": {"nested": "no"}}},
        {"allowed": True, "headers": [{"x-a": "b"}, "x"]},
        {"allowed": True, "headers": {"X-Upper": "b"}},
        {"allowed": True, "headers": {":path": "/admin"}},
        {"allowed": True, "headers": {"bad name": "b"}},
        {"allowed": True, "headers": {"x-a": "line\r\nx-injected: 1"}},
        {"allowed": True, "headers": {"x-a": "nul\x00"}},
        {"allowed": True, "headers": {"x-a": "lone \ud800 surrogate"}},
        {"allowed": True, "headers": {"x-a": "v" * 16385}},
        {"allowed": True, "request_headers_to_remove": "x-a"},
        {"allowed": True, "request_headers_to_remove": ["x-a", 3]},
        {"allowed": True, "request_headers_to_remove": [""]},
        {"allowed": True, "response_headers_to_add": ["x-a"]},
        {"allowed": True, "query_parameters_to_set": ["a"]},
        {"allowed": True, "query_parameters_to_set": {"a": 1}},
        {"allowed": True, "query_parameters_to_set": {"": "v"}},
        {"allowed": True, "query_parameters_to_remove": "a"},
        {"allowed": True, "dynamic_metadata": "x"},
        {"allowed": True, "dynamic_metadata": ["x"]},
        {"allowed": True, "body": 42},
        {"allowed": False, "body": 42},
        {"allowed": False, "body": None},
        {"allowed": False, "http_status": "403"},
        {"allowed": False, "http_status": 403.0},
        {"allowed": False, "http_status": True},
        {"allowed": False, "http_status": 9999},
        {"allowed": False, "http_status": 1},
        {"allowed": False, "http_status": 100},
        {"allowed": False, "http_status": 0},
        {"allowed": False, "http_status": 418},
        {"allowed": False, "headers": {"x-a": 5}},
    ],
)
def test_malformed_objects_deny(result: dict[str, Any]) -> None:
    assert deny_reason({"result": result}) is DenyReason.INVALID_RESULT


def test_object_allow_carries_every_mutation() -> None:
    verdict = interpret(
        {
            "decision_id": "opa-1",
            "result": {
                "allowed": True,
                "headers": [{"x-user": "alice", "x-role": ["a", "b"]}, {"x-user": "again"}],
                "request_headers_to_remove": ["x-debug"],
                "response_headers_to_add": {"x-authz": "ok"},
                "query_parameters_to_set": {"k": ["1", "2"]},
                "query_parameters_to_remove": ["drop"],
                "dynamic_metadata": {"user": "alice", "n": 3},
                "unknown_key": "ignored",
            },
        }
    )
    assert verdict == Allow(
        headers=(("x-user", "alice"), ("x-role", "a"), ("x-role", "b"), ("x-user", "again")),
        request_headers_to_remove=("x-debug",),
        response_headers_to_add=(("x-authz", "ok"),),
        query_parameters_to_set=(("k", "1"), ("k", "2")),
        query_parameters_to_remove=("drop",),
        dynamic_metadata={"user": "alice", "n": 3},
        opa_decision_id="opa-1",
    )


def test_object_deny_carries_status_headers_and_body() -> None:
    verdict = interpret(
        {
            "result": {
                "allowed": False,
                "http_status": 401,
                "headers": {"www-authenticate": "Bearer"},
                "body": "no",
            }
        }
    )
    assert verdict == Deny(
        DenyReason.POLICY_DENIED,
        "policy denied",
        http_status=401,
        headers=(("www-authenticate", "Bearer"),),
        body="no",
    )


def test_empty_header_value_and_unicode_are_accepted() -> None:
    verdict = interpret({"result": {"allowed": True, "headers": {"x-empty": "", "x-name": "Zoë"}}})
    assert isinstance(verdict, Allow)
    assert verdict.headers == (("x-empty", ""), ("x-name", "Zoë"))


def test_null_optional_fields_are_malformed_not_absent() -> None:
    assert deny_reason({"result": {"allowed": True, "headers": None}}) is DenyReason.INVALID_RESULT
    assert deny_reason({"result": {"allowed": True, "dynamic_metadata": None}}) is DenyReason.INVALID_RESULT
