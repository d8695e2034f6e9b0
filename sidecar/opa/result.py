"""OPA's answer -> Verdict. The only place an Allow is built.

Accepts what the OPA-Envoy plugin accepts (a boolean, or an object with a
boolean ``allowed`` and optional response fields), but stricter: every known
field that is present is validated, whatever the outcome, and any doubt is a
Deny. Header names and values are checked here because Envoy does not check
them and a bad one fails the request later, away from the decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sidecar._proto.envoy.type.v3.http_status_pb2 import StatusCode
from sidecar.verdict import Allow, Deny, DenyReason, Header, Verdict

# RFC 9110 token characters; Envoy lower-cases names, so upper case is refused
# rather than silently changed.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
# Visible ASCII, space, tab and obs-text; no CR, LF, NUL or other controls.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\ud7ff\ue000-\U0010ffff]*\Z")
_MAX_HEADER_BYTES = 16384  # Envoy's HeaderValue limit
# HTTP statuses a deny may carry: the values of Envoy's StatusCode enum, 2xx to 5xx.
_DENY_STATUSES = frozenset(code for code in StatusCode.values() if 200 <= code < 600)


class InvalidResult(ValueError):
    """The decision exists but has the wrong shape; the message names the field."""


def interpret(answer: Mapping[str, Any]) -> Verdict:
    """Turn a parsed OPA Data API response body into a Verdict."""
    opa_decision_id = answer.get("decision_id")
    if not isinstance(opa_decision_id, str):
        opa_decision_id = None
    if "result" not in answer:
        return Deny(DenyReason.UNDEFINED, "decision is undefined", opa_decision_id=opa_decision_id)
    try:
        return _verdict(answer["result"], opa_decision_id)
    except InvalidResult as exc:
        return Deny(DenyReason.INVALID_RESULT, str(exc), opa_decision_id=opa_decision_id)


def _verdict(result: Any, opa_decision_id: str | None) -> Verdict:
    if result is True:
        return Allow(opa_decision_id=opa_decision_id)
    if result is False:
        return Deny(DenyReason.POLICY_DENIED, "policy returned false", opa_decision_id=opa_decision_id)
    if not isinstance(result, dict):
        raise InvalidResult(f"result must be a boolean or an object, not {_kind(result)}")
    allowed = result.get("allowed")
    if not isinstance(allowed, bool):
        if "allowed" not in result:
            raise InvalidResult('result object has no "allowed" key')
        raise InvalidResult(f'"allowed" must be a boolean, not {_kind(allowed)}')

    # Validate every known field, whatever the outcome: a malformed answer is
    # an uncertain answer.
    headers = _header_list(result, "headers")
    response_headers = _header_list(result, "response_headers_to_add")
    to_remove = _name_list(result, "request_headers_to_remove")
    query_set = _query_set(result)
    query_remove = _string_list(result, "query_parameters_to_remove")
    metadata = _metadata(result)
    body = result.get("body", "")
    if not isinstance(body, str):
        raise InvalidResult(f'"body" must be a string, not {_kind(body)}')
    status = result.get("http_status", 403)
    if type(status) is not int or status not in _DENY_STATUSES:
        raise InvalidResult(f'"http_status" must be an HTTP status code from 200 to 599, not {status!r:.40}')

    if allowed:
        return Allow(
            headers=headers,
            request_headers_to_remove=to_remove,
            response_headers_to_add=response_headers,
            query_parameters_to_set=query_set,
            query_parameters_to_remove=query_remove,
            dynamic_metadata=metadata,
            opa_decision_id=opa_decision_id,
        )
    return Deny(
        DenyReason.POLICY_DENIED,
        "policy denied",
        http_status=status,
        headers=headers,
        body=body,
        dynamic_metadata=metadata,
        opa_decision_id=opa_decision_id,
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "an object"
    )


def _check_header(field: str, name: Any, value: Any) -> Header:
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise InvalidResult(f'"{field}" has an invalid header name {name!r:.40}')
    if not isinstance(value, str):
        raise InvalidResult(f'"{field}" header {name!r} must have string values, not {_kind(value)}')
    if not _HEADER_VALUE.match(value) or len(value.encode()) > _MAX_HEADER_BYTES:
        raise InvalidResult(f'"{field}" header {name!r} has an invalid value')
    return (name, value)


def _header_list(result: Mapping[str, Any], field: str) -> tuple[Header, ...]:
    """An object of name -> string | [string], or an array of such objects."""
    raw = result.get(field)
    if raw is None and field not in result:
        return ()
    groups = raw if isinstance(raw, list) else [raw]
    out: list[Header] = []
    for group in groups:
        if not isinstance(group, dict):
            raise InvalidResult(f'"{field}" must be an object or an array of objects, not {_kind(group)}')
        for name, value in group.items():
            values = value if isinstance(value, list) else [value]
            out.extend(_check_header(field, name, v) for v in values)
    return tuple(out)


def _string_list(result: Mapping[str, Any], field: str) -> tuple[str, ...]:
    raw = result.get(field, [])
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise InvalidResult(f'"{field}" must be an array of non-empty strings')
    return tuple(raw)


def _name_list(result: Mapping[str, Any], field: str) -> tuple[str, ...]:
    names = _string_list(result, field)
    for name in names:
        if not _HEADER_NAME.match(name):
            raise InvalidResult(f'"{field}" has an invalid header name {name!r:.40}')
    return names


def _query_set(result: Mapping[str, Any]) -> tuple[Header, ...]:
    raw = result.get("query_parameters_to_set", {})
    if not isinstance(raw, dict):
        raise InvalidResult(f'"query_parameters_to_set" must be an object, not {_kind(raw)}')
    out: list[Header] = []
    for key, value in raw.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not key or not isinstance(v, str) or not _HEADER_VALUE.match(v):
                raise InvalidResult(f'"query_parameters_to_set" {key!r:.40} must have string values')
            out.append((key, v))
    return tuple(out)


def _metadata(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    raw = result.get("dynamic_metadata")
    if raw is None and "dynamic_metadata" not in result:
        return None
    if not isinstance(raw, dict):
        raise InvalidResult(f'"dynamic_metadata" must be an object, not {_kind(raw)}')
    return raw
