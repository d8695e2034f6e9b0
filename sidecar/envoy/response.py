"""Verdict -> CheckResponse, following the rules that keep a deny a deny in Envoy:

- an allow is status OK with an ``ok_response`` and nothing else;
- a deny is PERMISSION_DENIED (UNAUTHENTICATED for a 401) with a
  ``denied_response``: never a gRPC error, never ``error_response``, never an
  empty response (an empty CheckResponse allows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.struct_pb2 import Struct

from sidecar._proto.envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption, QueryParameter
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import (
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from sidecar._proto.envoy.type.v3.http_status_pb2 import HttpStatus
from sidecar._proto.google.rpc.status_pb2 import Status
from sidecar.verdict import Allow, Deny, Header, Verdict

OK = 0
PERMISSION_DENIED = 7
UNAUTHENTICATED = 16

# Request headers overwrite what the client sent (identity headers must not be
# spoofable); say so explicitly rather than rely on Envoy's current default.
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def build_response(verdict: Verdict, decision_id: str) -> CheckResponse:
    if isinstance(verdict, Allow):
        return _allow(verdict, decision_id)
    return _deny(verdict, decision_id)


def _allow(allow: Allow, decision_id: str) -> CheckResponse:
    if not (
        allow.headers
        or allow.request_headers_to_remove
        or allow.response_headers_to_add
        or allow.query_parameters_to_set
        or allow.query_parameters_to_remove
        or allow.dynamic_metadata
    ):  # the common yes: nothing to build but the decision id
        return CheckResponse(
            status=Status(code=OK),
            ok_response=OkHttpResponse(),
            dynamic_metadata=_metadata(None, decision_id),
        )
    ok = OkHttpResponse(
        headers=[
            HeaderValueOption(header=HeaderValue(key=k, value=v), append_action=_OVERWRITE)
            for k, v in allow.headers
        ],
        headers_to_remove=allow.request_headers_to_remove,
        response_headers_to_add=_options(allow.response_headers_to_add),
        query_parameters_to_set=[QueryParameter(key=k, value=v) for k, v in allow.query_parameters_to_set],
        query_parameters_to_remove=allow.query_parameters_to_remove,
    )
    return CheckResponse(
        status=Status(code=OK),
        ok_response=ok,
        dynamic_metadata=_metadata(allow.dynamic_metadata, decision_id),
    )


def _deny(deny: Deny, decision_id: str) -> CheckResponse:
    code = UNAUTHENTICATED if deny.http_status == 401 else PERMISSION_DENIED
    return CheckResponse(
        status=Status(code=code, message=deny.reason.value),
        denied_response=DeniedHttpResponse(
            status=HttpStatus(code=deny.http_status),  # type: ignore[arg-type]
            headers=_options(deny.headers),
            body=deny.body,
        ),
        dynamic_metadata=_metadata(deny.dynamic_metadata, decision_id, deny.reason.value),
    )


def _options(headers: Iterable[Header]) -> list[HeaderValueOption]:
    return [HeaderValueOption(header=HeaderValue(key=k, value=v)) for k, v in headers]


def _metadata(policy: Mapping[str, Any] | None, decision_id: str, deny_reason: str | None = None) -> Struct:
    md = Struct()
    if policy:
        md.update(policy)
    # Ours win over the policy's keys: operators join logs on them.
    md["decision_id"] = decision_id
    if deny_reason is not None:
        md["deny_reason"] = deny_reason
    return md


def minimal_deny(decision_id: str, reason: str) -> CheckResponse:
    """The last line of defence, used when building the real response failed:
    a deny made of plain strings only."""
    md = Struct()
    md["decision_id"] = decision_id
    md["deny_reason"] = reason
    return CheckResponse(
        status=Status(code=PERMISSION_DENIED, message=reason),
        denied_response=DeniedHttpResponse(status=HttpStatus(code=403)),  # type: ignore[arg-type]
        dynamic_metadata=md,
    )
