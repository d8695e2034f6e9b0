"""What Envoy 1.40 does with an ext_authz answer, as one comparable value.

Two answers that Envoy enforces alike compare equal: a deny without `denied_response` is
Envoy's plain 403; PERMISSION_DENIED and UNAUTHENTICATED are both a deny; a request header
overwrites whether the option says so or leaves it unset (envoy-ext-authz reference, §7).
The decision id and the sidecar's deny reason are left out of the metadata: they differ by
design on every check.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from sidecar._proto.envoy.config.core.v3.base_pb2 import HeaderValueOption
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub

ECHO_HEADER = "x-input"
# Metadata keys each side writes for itself.
OWN_METADATA = ("decision_id", "deny_reason")

Header = tuple[str, str, str]  # name, value, what Envoy does with it


@dataclass(frozen=True)
class Outcome:
    kind: str  # "allow", "deny", or "error" (a gRPC error: Envoy's failure mode decides)
    http_status: int = 0  # what the client gets for a deny
    headers: tuple[Header, ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[Header, ...] = ()
    query_parameters_to_set: tuple[tuple[str, str], ...] = ()
    query_parameters_to_remove: tuple[str, ...] = ()
    body: str = ""
    metadata: str = "{}"  # JSON, keys sorted
    error: str = ""  # the gRPC status code's name
    echoed_input: Any = None  # the input document the echo policy sent back, decoded

    def without_input(self) -> Outcome:
        return Outcome(**{**self.__dict__, "echoed_input": None})


def _request_header(option: HeaderValueOption) -> Header:
    # Envoy 1.40 sets or adds a request header for every option but the deprecated append: true.
    how = "append" if option.HasField("append") and option.append.value else "set"
    return option.header.key, _value(option), how


def _response_header(option: HeaderValueOption) -> Header:
    if option.HasField("append"):
        how = "append" if option.append.value else "set"
    else:
        how = {0: "append", 1: "add-if-absent", 2: "set", 3: "set-if-present"}[option.append_action]
    return option.header.key, _value(option), how


def _value(option: HeaderValueOption) -> str:
    return option.header.value or option.header.raw_value.decode("latin-1")


def _metadata(response: CheckResponse) -> str:
    fields = MessageToDict(response.dynamic_metadata) if response.HasField("dynamic_metadata") else {}
    return json.dumps({k: v for k, v in fields.items() if k not in OWN_METADATA}, sort_keys=True)


def outcome_of(response: CheckResponse) -> Outcome:
    metadata = _metadata(response)
    if response.status.code != 0:
        if not response.HasField("denied_response"):
            return Outcome("deny", 403, metadata=metadata)
        denied = response.denied_response
        to_client = tuple(sorted((o.header.key, _value(o), "set") for o in denied.headers))
        status = denied.status.code or 403
        return Outcome("deny", status, to_client, body=denied.body, metadata=metadata)
    ok = response.ok_response
    echoed = None
    headers: list[Header] = []
    for option in ok.headers:
        header = _request_header(option)
        if header[0] == ECHO_HEADER:
            echoed = json.loads(base64.b64decode(header[1]))
        else:
            headers.append(header)
    return Outcome(
        "allow",
        headers=tuple(sorted(headers)),
        headers_to_remove=tuple(sorted(ok.headers_to_remove)),
        response_headers_to_add=tuple(sorted(_response_header(o) for o in ok.response_headers_to_add)),
        query_parameters_to_set=tuple(sorted((q.key, q.value) for q in ok.query_parameters_to_set)),
        query_parameters_to_remove=tuple(sorted(ok.query_parameters_to_remove)),
        metadata=metadata,
        echoed_input=echoed,
    )


def error_outcome(error: grpc.aio.AioRpcError) -> Outcome:
    return Outcome("error", error=error.code().name)


def differences(ours: Outcome, theirs: Outcome) -> str:
    """The fields in which two outcomes differ, one a line; for echoed inputs, the keys."""
    lines = []
    for name, value in ours.__dict__.items():
        other = theirs.__dict__[name]
        if value == other:
            continue
        if name == "echoed_input" and isinstance(value, dict) and isinstance(other, dict):
            lines += [f"    input {path}: {a!r} / {b!r}" for path, a, b in _paths_differing(value, other, "")]
        else:
            lines.append(f"    {name}: {value!r} / {other!r}")
    return "\n".join(lines)


def _paths_differing(a: Any, b: Any, at: str) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += _paths_differing(a.get(key), b.get(key), f"{at}/{key}")
        return found
    return [] if a == b else [(at, a, b)]


async def ask_over_grpc(target: str, requests: list[CheckRequest]) -> list[Outcome]:
    """Each request's outcome from the ext_authz server at ``target``, one at a time;
    a gRPC error is an outcome too."""
    outcomes = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        for request in requests:
            try:
                outcomes.append(outcome_of(await stub.Check(request, timeout=5.0)))
            except grpc.aio.AioRpcError as error:
                outcomes.append(error_outcome(error))
    return outcomes
