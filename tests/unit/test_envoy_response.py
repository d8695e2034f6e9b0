"""The response builder: a deny is a deny to Envoy, whatever its failure mode."""

from __future__ import annotations

import pytest

from sidecar._proto.envoy.config.core.v3.base_pb2 import HeaderValueOption
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar.envoy.response import PERMISSION_DENIED, UNAUTHENTICATED, build_response, minimal_deny
from sidecar.verdict import Allow, Deny, DenyReason


def roundtrip(response: CheckResponse) -> CheckResponse:
    return CheckResponse.FromString(response.SerializeToString())


def test_plain_allow_is_ok_with_an_ok_response() -> None:
    response = roundtrip(build_response(Allow(), "d-1"))
    assert response.HasField("status")
    assert response.status.code == 0
    assert response.WhichOneof("http_response") == "ok_response"
    assert dict(response.dynamic_metadata) == {"decision_id": "d-1"}


def test_allow_mutations_map_to_ok_response() -> None:
    response = roundtrip(
        build_response(
            Allow(
                headers=(("x-user", "alice"),),
                request_headers_to_remove=("x-debug",),
                response_headers_to_add=(("x-authz", "ok"),),
                query_parameters_to_set=(("k", "v"),),
                query_parameters_to_remove=("drop",),
                dynamic_metadata={"user": "alice", "decision_id": "spoofed"},
            ),
            "d-2",
        )
    )
    ok = response.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [("x-user", "alice")]
    # Identity headers replace whatever the client sent.
    assert ok.headers[0].append_action == HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert not ok.headers[0].HasField("append")
    assert list(ok.headers_to_remove) == ["x-debug"]
    assert [(h.header.key, h.header.value) for h in ok.response_headers_to_add] == [("x-authz", "ok")]
    assert [(q.key, q.value) for q in ok.query_parameters_to_set] == [("k", "v")]
    assert list(ok.query_parameters_to_remove) == ["drop"]
    assert not ok.HasField("dynamic_metadata")  # deprecated field would override the real one
    assert dict(response.dynamic_metadata) == {"user": "alice", "decision_id": "d-2"}


@pytest.mark.parametrize("reason", list(DenyReason))
def test_every_deny_is_permission_denied_with_a_denied_response(reason: DenyReason) -> None:
    response = roundtrip(build_response(Deny(reason, "detail"), "d-3"))
    assert response.status.code == PERMISSION_DENIED
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.denied_response.status.code == 403
    assert response.dynamic_metadata["deny_reason"] == reason.value
    assert response.dynamic_metadata["decision_id"] == "d-3"
    assert "detail" not in response.SerializeToString().decode("latin-1")


def test_policy_deny_carries_status_headers_body_and_401_is_unauthenticated() -> None:
    deny = Deny(
        DenyReason.POLICY_DENIED,
        http_status=401,
        headers=(("www-authenticate", "Bearer"), ("x-dup", "1"), ("x-dup", "2")),
        body="login first",
        dynamic_metadata={"why": "no token"},
    )
    response = roundtrip(build_response(deny, "d-4"))
    assert response.status.code == UNAUTHENTICATED
    denied = response.denied_response
    assert denied.status.code == 401
    assert [(h.header.key, h.header.value) for h in denied.headers] == [
        ("www-authenticate", "Bearer"),
        ("x-dup", "1"),
        ("x-dup", "2"),
    ]
    assert denied.body == "login first"
    assert dict(response.dynamic_metadata) == {
        "why": "no token",
        "decision_id": "d-4",
        "deny_reason": "policy_denied",
    }


def test_minimal_deny_is_a_complete_deny() -> None:
    response = roundtrip(minimal_deny("d-5", "internal_error"))
    assert response.status.code == PERMISSION_DENIED
    assert response.denied_response.status.code == 403
    assert response.dynamic_metadata["deny_reason"] == "internal_error"


@pytest.mark.parametrize("opa_decision_id", [None, "opa-1"])
def test_a_bare_allow_is_built_as_the_general_path_builds_it(opa_decision_id: str | None) -> None:
    # The shortcut for an allow without mutations must give the same bytes as
    # building every (empty) field would.
    from google.protobuf.struct_pb2 import Struct

    from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import OkHttpResponse
    from sidecar._proto.google.rpc.status_pb2 import Status

    metadata = Struct()
    metadata["decision_id"] = "d-1"
    general = CheckResponse(
        status=Status(code=0),
        ok_response=OkHttpResponse(
            headers=[],
            headers_to_remove=[],
            response_headers_to_add=[],
            query_parameters_to_set=[],
            query_parameters_to_remove=[],
        ),
        dynamic_metadata=metadata,
    )
    built = build_response(Allow(opa_decision_id=opa_decision_id), "d-1")
    assert built.SerializeToString(deterministic=True) == general.SerializeToString(deterministic=True)
    assert built.HasField("ok_response") and not built.HasField("denied_response")


@pytest.mark.parametrize(
    "allow",
    [
        Allow(headers=(("x-user", "a"),)),
        Allow(request_headers_to_remove=("x-debug",)),
        Allow(response_headers_to_add=(("x-r", "1"),)),
        Allow(query_parameters_to_set=(("q", "1"),)),
        Allow(query_parameters_to_remove=("q",)),
        Allow(dynamic_metadata={"k": "v"}),
    ],
)
def test_an_allow_with_any_mutation_keeps_it(allow: Allow) -> None:
    ok = build_response(allow, "d-1").ok_response
    assert (
        len(ok.headers)
        + len(ok.headers_to_remove)
        + len(ok.response_headers_to_add)
        + len(ok.query_parameters_to_set)
        + len(ok.query_parameters_to_remove)
        + ("k" in build_response(allow, "d-1").dynamic_metadata)
    ) == 1
