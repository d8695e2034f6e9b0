"""--require and --require-tls-peer: a missing signal is denied without asking OPA."""

from __future__ import annotations

import aiohttp
import pytest

from sidecar.cli import build_parser
from sidecar.config import ConfigError, settings_from
from sidecar.envoy.response import PERMISSION_DENIED
from sidecar.signals import JsonPointer, parse_pointers
from tests.check_requests import check_request
from tests.fault_opa import FaultOpa
from tests.fixtures.opa import OpaProcess
from tests.fixtures.sidecar import SidecarHandle, running_sidecar

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


@pytest.mark.parametrize("value", ["", ",", ",,", ", ,"])
async def test_a_header_that_carries_nothing_is_missing(fault_opa: FaultOpa, value: str) -> None:
    async with running_sidecar(fault_opa.url, require=parse_pointers([AUTHZ])) as sidecar:
        response = await sidecar.check(check_request(headers={"authorization": value}))
        [entry] = sidecar.decisions()
    assert response.status.code == PERMISSION_DENIED
    assert (entry["reason"], entry["detail"]) == (
        "missing_signal",
        f"required signal {AUTHZ} is missing or carries nothing",
    )
    assert fault_opa.count == 0


@pytest.mark.parametrize("value", [" ", " , ,\t", "\u00a0"])
async def test_a_header_value_the_application_may_read_otherwise_is_refused_first(
    fault_opa: FaultOpa, value: str
) -> None:
    # Space at an end or bytes beyond ASCII: refused before any guard, OPA not asked.
    async with running_sidecar(fault_opa.url, require=parse_pointers([AUTHZ])) as sidecar:
        response = await sidecar.check(check_request(headers={"authorization": value}))
        [entry] = sidecar.decisions()
    assert response.status.code == PERMISSION_DENIED
    assert entry["reason"] == "bad_request"
    assert fault_opa.count == 0


# A JSON check API caller writes the whole document: it can claim any of these.
ENVOY_ATTESTED = {
    PRINCIPAL: "spiffe://example.org/ns/a/sa/b",
    "/attributes/source/certificate": "-----BEGIN%20CERTIFICATE-----",
    "/attributes/source/address/socketAddress/address": "10.0.0.7",
    "/attributes/destination/principal": "spiffe://example.org/ns/a/sa/api",
    "/attributes/tlsSession/sni": "api.example.org",
    "/source_principal": "spiffe://example.org/ns/a/sa/b",
}


def _document_claiming_everything() -> dict[str, object]:
    peer = {
        "principal": ENVOY_ATTESTED[PRINCIPAL],
        "certificate": ENVOY_ATTESTED["/attributes/source/certificate"],
        "address": {"socketAddress": {"address": "10.0.0.7", "portValue": 443}},
    }
    return {
        "attributes": {
            "source": peer,
            "destination": {"principal": ENVOY_ATTESTED["/attributes/destination/principal"]},
            "tlsSession": {"sni": "api.example.org"},
            "request": {"http": {"headers": {"authorization": "Bearer t"}}},
        },
        "source_principal": ENVOY_ATTESTED["/source_principal"],
    }


async def _post_check(sidecar: SidecarHandle, document: object) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{sidecar.sidecar.http.port}/v1/check"
    async with aiohttp.ClientSession() as session, session.post(url, json=document) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("pointer", sorted(ENVOY_ATTESTED))
async def test_json_api_never_meets_a_guard_only_envoy_can_attest(fault_opa: FaultOpa, pointer: str) -> None:
    document = _document_claiming_everything()
    assert JsonPointer.parse(pointer).resolve(document) == ENVOY_ATTESTED[pointer]
    async with running_sidecar(fault_opa.url, require=parse_pointers([pointer])) as sidecar:
        status, answer = await _post_check(sidecar, document)
        [entry] = sidecar.decisions()
    assert (status, answer["allowed"], answer["reason"]) == (403, False, "missing_signal")
    assert entry["detail"] == (
        f"required signal {pointer} can only come from Envoy's gRPC check: "
        "the JSON check API's caller writes the whole input document"
    )
    assert fault_opa.count == 0


async def test_json_api_require_tls_peer_denies_and_other_guards_still_hold(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url, require_tls_peer=True) as sidecar:
        status, answer = await _post_check(sidecar, _document_claiming_everything())
    assert (status, answer["reason"]) == (403, "missing_signal")
    assert fault_opa.count == 0
    # A guard on what the caller itself sends is met by the document, or not.
    async with running_sidecar(fault_opa.url, require=parse_pointers([AUTHZ])) as sidecar:
        allowed, _ = await _post_check(sidecar, _document_claiming_everything())
        blank = {"attributes": {"request": {"http": {"headers": {"authorization": " , "}}}}}
        denied, answer = await _post_check(sidecar, blank)
    assert (allowed, denied, answer["reason"]) == (200, 403, "missing_signal")
    assert fault_opa.count == 1


async def test_http_mode_never_meets_a_tls_peer_guard(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url, require_tls_peer=True) as sidecar:
        url = f"http://127.0.0.1:{sidecar.sidecar.http.port}/ext_authz/orders"
        forged = {
            "x-forwarded-client-cert": "URI=spiffe://example.org/ns/a/sa/b",
            "authorization": "Bearer t",
        }
        async with aiohttp.ClientSession() as session, session.get(url, headers=forged) as response:
            status = response.status
        [entry] = sidecar.decisions()
    assert status == 403
    assert entry["reason"] == "missing_signal"
    assert entry["detail"] == (
        f"required signal {PRINCIPAL} can only come from Envoy's gRPC check: "
        "in ext_authz HTTP mode Envoy forwards headers, not its view of the connection"
    )
    assert fault_opa.count == 0
