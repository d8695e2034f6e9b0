"""--require and --require-tls-peer: a missing signal is denied without asking OPA."""

from __future__ import annotations

import pytest

from sidecar.cli import build_parser
from sidecar.config import ConfigError, settings_from
from sidecar.envoy.response import PERMISSION_DENIED
from sidecar.signals import parse_pointers
from tests.check_requests import check_request
from tests.fault_opa import FaultOpa
from tests.fixtures.opa import OpaProcess
from tests.fixtures.sidecar import running_sidecar

AUTHZ = "/attributes/request/http/headers/authorization"
PRINCIPAL = "/attributes/source/principal"


@pytest.mark.parametrize(
    ("headers", "principal", "missing"),
    [
        ({"authorization": "Bearer t"}, "spiffe://example.org/sa/web", None),
        ({}, "spiffe://example.org/sa/web", AUTHZ),
        ({"authorization": ""}, "spiffe://example.org/sa/web", AUTHZ),
        ({"authorization": "Bearer t"}, "", PRINCIPAL),
        ({}, "", AUTHZ),
    ],
)
async def test_required_pointers(
    fault_opa: FaultOpa, headers: dict[str, str], principal: str, missing: str | None
) -> None:
    require = parse_pointers([AUTHZ, PRINCIPAL])
    async with running_sidecar(fault_opa.url, require=require) as sidecar:
        response = await sidecar.check(check_request(headers=headers, principal=principal))
        [entry] = sidecar.decisions()
    if missing is None:
        assert response.status.code == 0
        assert fault_opa.count == 1
        return
    assert response.status.code == PERMISSION_DENIED
    assert response.dynamic_metadata["deny_reason"] == "missing_signal"
    assert (entry["reason"], fault_opa.count) == ("missing_signal", 0)
    assert missing in entry["detail"]


@pytest.mark.parametrize(("principal", "allowed"), [("spiffe://example.org/ns/a/sa/b", True), ("", False)])
async def test_require_tls_peer(fault_opa: FaultOpa, principal: str, allowed: bool) -> None:
    async with running_sidecar(fault_opa.url, require_tls_peer=True) as sidecar:
        response = await sidecar.check(check_request(principal=principal))
        [entry] = sidecar.decisions()
    assert (response.status.code == 0) is allowed
    assert fault_opa.count == (1 if allowed else 0)
    if not allowed:
        assert entry["reason"] == "missing_signal"
        assert PRINCIPAL in entry["detail"]


async def test_guard_holds_against_an_allow_all_policy(opa_server: OpaProcess) -> None:
    # rego/ allows GET /public/... for anyone; the guard still refuses an anonymous call.
    require = parse_pointers([AUTHZ])
    # A generous budget: this test is about the guard, not the engine's speed.
    async with running_sidecar(opa_server.url, require=require, opa_timeout=5.0) as sidecar:
        anonymous = await sidecar.check(check_request("GET", "/public/x"))
        with_token = await sidecar.check(
            check_request("GET", "/public/x", headers={"authorization": "Bearer t"})
        )
    assert anonymous.status.code == PERMISSION_DENIED
    assert with_token.status.code == 0


def test_malformed_pointer_is_a_startup_error() -> None:
    args = build_parser().parse_args(["serve", "--opa-url", "http://o:1", "--require", "attributes/x"])
    with pytest.raises(ConfigError, match="--require"):
        settings_from(args, {})
    env = {"OPA_SIDECAR_OPA_URL": "http://o:1", "OPA_SIDECAR_REQUIRE": "/a,/b~"}
    with pytest.raises(ConfigError, match="OPA_SIDECAR_REQUIRE"):
        settings_from(build_parser().parse_args(["serve"]), env)
    ok = settings_from(
        build_parser().parse_args(["serve", "--require", "/a", "--require", "/b"]),
        env | {"OPA_SIDECAR_REQUIRE": "/x"},
    )
    assert [p.text for p in ok.require] == ["/a", "/b"]
