"""The outcome of a check: an Allow or a Deny, and the closed set of deny reasons.

An ``Allow`` is built in exactly one place, ``sidecar.opa.result.interpret``,
after a complete OPA answer has been validated. Everything else makes a Deny.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class DenyReason(enum.StrEnum):
    """Why a check was denied. Closed set: logs, metrics and Envoy's dynamic
    metadata carry exactly these strings."""

    POLICY_DENIED = "policy_denied"  # the policy answered a valid "no"
    UNDEFINED = "undefined"  # OPA answered 200 without a result
    OPA_TIMEOUT = "opa_timeout"  # no complete answer within the budget
    OPA_UNREACHABLE = "opa_unreachable"  # connect failed, refused, reset
    OPA_HTTP_STATUS = "opa_http_status"  # any status but 200 (3xx included)
    OPA_BAD_RESPONSE = "opa_bad_response"  # not a well-formed JSON answer
    INVALID_RESULT = "invalid_result"  # a result of the wrong shape or type
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the caller's deadline left no time
    OVERLOADED = "overloaded"  # more checks in flight than --max-inflight, or HTTP connections than the cap
    BAD_REQUEST = "bad_request"  # the CheckRequest could not be parsed
    MISSING_SIGNAL = "missing_signal"  # a required input signal is absent
    SHUTTING_DOWN = "shutting_down"  # the process is draining
    INTERNAL_ERROR = "internal_error"  # any unexpected exception
    # Deny memory (sidecar/deny_memory.py): made without asking OPA.
    HELD_AFTER_DENY = "held_after_deny"  # the caller was denied within the window
    CREDENTIAL_SWITCH = "credential_switch"  # a denied caller now presents another credential
    DENY_MEMORY_UNAVAILABLE = "deny_memory_unavailable"  # the shared memory did not answer in time


Header = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Allow:
    """A validated yes, with the policy's request and response mutations."""

    headers: tuple[Header, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[Header, ...] = ()
    query_parameters_to_set: tuple[Header, ...] = ()
    query_parameters_to_remove: tuple[str, ...] = ()
    dynamic_metadata: Mapping[str, Any] | None = None
    opa_decision_id: str | None = None


@dataclass(frozen=True, slots=True)
class Deny:
    """A no. ``detail`` is for the logs only and must never hold a secret."""

    reason: DenyReason
    detail: str = ""
    http_status: int = 403
    headers: tuple[Header, ...] = ()
    body: str = ""
    dynamic_metadata: Mapping[str, Any] | None = None
    opa_decision_id: str | None = None


Verdict = Allow | Deny
