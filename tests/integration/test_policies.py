"""The policies of `rego/` driven through the sidecar with Envoy-shaped CheckRequests.

One OPA serves `rego/` plus a data file written here: the public halves of keys generated
for this module, and just-in-time grants around the current time. Tokens are signed here
at run time, so the policies check them against the real clock.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from sidecar.envoy.response import OK, PERMISSION_DENIED, UNAUTHENTICATED
from tests.check_requests import check_request
from tests.fixtures.opa import DEMO_DATA, REGO_DIR, OpaProcess, start_opa
from tests.fixtures.sidecar import running_sidecar
from tests.rego.token_fixtures import (
    API_AUDIENCE,
    MCP_AUDIENCE,
    SECRETS_AUDIENCE,
    SigningKey,
    claims,
    hmac_signed,
)

RSA_KEY = SigningKey.rsa("it-rsa")
EC_KEY = SigningKey.ec("it-ec")
UNTRUSTED_KEY = SigningKey.ec("it-ec")  # same key id as a trusted key
JWKS = {"keys": [RSA_KEY.public_jwk(), EC_KEY.public_jwk()]}

DEPLOYER = "spiffe://example.org/ns/ops/sa/deploy-agent"


def rfc3339(seconds_from_now: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def grant(action: str, not_before: Any, not_after: Any) -> dict[str, Any]:
    return {"subject": DEPLOYER, "actions": [action], "not_before": not_before, "not_after": not_after}


def jit_grants() -> dict[str, Any]:
    hour = 3600.0
    return {
        "active": grant("POST /deployments/web/restart", rfc3339(-hour), rfc3339(hour)),
        "expired": grant("POST /deployments/web/rollback", rfc3339(-2 * hour), rfc3339(-hour)),
        "future": grant("POST /deployments/web/scale", rfc3339(hour), rfc3339(2 * hour)),
        "inverted": grant("POST /deployments/web/pause", rfc3339(hour), rfc3339(-hour)),
        "bad-date": grant("POST /deployments/web/stop", rfc3339(-hour), "2026-02-30T00:00:00Z"),
        "no-zone": grant("POST /deployments/web/drain", rfc3339(-hour)[:-1], rfc3339(hour)),
        "missing-end": {
            "subject": DEPLOYER,
            "actions": ["POST /deployments/web/tag"],
            "not_before": rfc3339(-hour),
        },
    }


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaProcess]:
    # Named on the command line, the file merges at the root of data, next to rego/.
    extra = tmp_path_factory.mktemp("policy-data") / "keys-and-grants.json"
    extra.write_text(
        json.dumps({"envoy": {"jwks": JWKS}, "agents": {"jwks": JWKS, "jit_grants": jit_grants()}}),
        encoding="utf-8",
    )
    process = start_opa([REGO_DIR, DEMO_DATA, extra])
    yield process
    process.stop()


def token(key: SigningKey, subject: str, audience: str | list[str], **extra: Any) -> str:
    return key.sign(claims(subject, audience, now=int(time.time()), **extra))


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


async def check(opa: OpaProcess, decision_path: str, request: CheckRequest, **settings: Any) -> CheckResponse:
    async with running_sidecar(opa.url, decision_path=decision_path, opa_timeout=2.0, **settings) as sidecar:
        response = await sidecar.check(request, timeout=5.0)
        [decision] = sidecar.decisions()
        assert decision["outcome"] == ("allow" if response.status.code == OK else "deny")
        return response


def headers_of(options: Any) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}


def assert_allowed(response: CheckResponse) -> dict[str, str]:
    assert response.status.code == OK, response
    assert response.WhichOneof("http_response") == "ok_response"
    return headers_of(response.ok_response.headers)


def assert_denied(response: CheckResponse, http_status: int, reason: str) -> dict[str, str]:
    """A policy deny with the given status and JSON reason; returns the headers sent to the client."""
    assert response.status.code == (UNAUTHENTICATED if http_status == 401 else PERMISSION_DENIED), response
    assert response.dynamic_metadata["deny_reason"] == "policy_denied"
    denied = response.denied_response
    assert denied.status.code == http_status
    headers = headers_of(denied.headers)
    assert headers["content-type"] == "application/json"
    assert json.loads(denied.body)["reason"] == reason
    return headers


# -- envoy/authz ---------------------------------------------------------------------------------

AUTHZ = "envoy/authz/allow"


async def test_authz_public_requests_pass(opa: OpaProcess) -> None:
    public = assert_allowed(await check(opa, AUTHZ, check_request("GET", "/public/hello")))
    assert public == {"x-authz-policy": "public-read"}


async def test_authz_denies_anything_else_with_403_and_json(opa: OpaProcess) -> None:
    response = await check(opa, AUTHZ, check_request("GET", "/private", headers={"x-api-key": "wrong"}))
    assert_denied(response, 403, "no route permits this request")
    traversal = await check(opa, AUTHZ, check_request("GET", "/public/../admin"))
    assert_denied(traversal, 403, "the request path is not canonical")


async def test_authz_verified_tokens_with_the_route_scope_pass(opa: OpaProcess) -> None:
    reader = token(RSA_KEY, "alice", API_AUDIENCE, scope="orders:read")
    read = assert_allowed(
        await check(opa, AUTHZ, check_request("GET", "/api/orders/7", headers=bearer(reader)))
    )
    assert read == {"x-authz-policy": "orders-read", "x-auth-subject": "alice"}
    writer = token(EC_KEY, "bob", API_AUDIENCE, scope="orders:read orders:write")
    request = check_request(
        "POST",
        "/api/orders",
        headers={**bearer(writer), "content-type": "application/json"},
        body='{"item": "book", "qty": 1}',
    )
    assert assert_allowed(await check(opa, AUTHZ, request))["x-auth-subject"] == "bob"


async def test_authz_valid_token_without_the_scope_is_403(opa: OpaProcess) -> None:
    reader = token(RSA_KEY, "alice", API_AUDIENCE, scope="orders:read")
    response = await check(opa, AUTHZ, check_request("POST", "/api/orders", headers=bearer(reader)))
    headers = assert_denied(response, 403, "the token lacks the scope this route needs")
    assert headers["www-authenticate"] == 'Bearer realm="api", error="insufficient_scope"'


async def test_authz_missing_token_is_401_with_a_challenge(opa: OpaProcess) -> None:
    response = await check(opa, AUTHZ, check_request("GET", "/api/orders"))
    headers = assert_denied(response, 401, "this route needs a bearer token")
    assert headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(
            lambda: token(RSA_KEY, "alice", API_AUDIENCE, scope="orders:read", exp=int(time.time()) - 5),
            id="expired",
        ),
        pytest.param(
            lambda: token(RSA_KEY, "alice", API_AUDIENCE, scope="orders:read", nbf=int(time.time()) + 600),
            id="not-yet-valid",
        ),
        pytest.param(
            lambda: token(UNTRUSTED_KEY, "alice", API_AUDIENCE, scope="orders:read"), id="untrusted-key"
        ),
        pytest.param(lambda: token(RSA_KEY, "alice", MCP_AUDIENCE, scope="orders:read"), id="other-audience"),
        pytest.param(
            lambda: token(RSA_KEY, "alice", API_AUDIENCE, scope="orders:read", iss="https://evil.example"),
            id="other-issuer",
        ),
        pytest.param(
            lambda: hmac_signed(
                claims("alice", API_AUDIENCE, now=int(time.time()), scope="orders:read"),
                json.dumps(RSA_KEY.public_jwk()).encode(),
                RSA_KEY.kid,
            ),
            id="hs256-signed-with-the-public-key",
        ),
        pytest.param(lambda: "not.a.jwt", id="garbage"),
    ],
)
async def test_authz_invalid_token_is_401(opa: OpaProcess, bad_token: Any) -> None:
    response = await check(opa, AUTHZ, check_request("GET", "/api/orders", headers=bearer(bad_token())))
    headers = assert_denied(response, 401, "the Authorization header holds no valid bearer token")
    assert headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'


# -- agents/mcp ----------------------------------------------------------------------------------

MCP = "agents/mcp/allow"
RESEARCHER_SCOPES = "mcp:tools tools:search_docs"


def mcp_post(body: Any, scope: str | None = RESEARCHER_SCOPES, **headers: str) -> CheckRequest:
    agent = token(EC_KEY, "agent-researcher", MCP_AUDIENCE, scope=scope)
    text = body if isinstance(body, str) else json.dumps(body)
    return check_request(
        "POST",
        "/mcp",
        headers={
            **bearer(agent),
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **headers,
        },
        body=text,
    )


def rpc(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def tool_call(request_id: int, tool: str) -> dict[str, Any]:
    return rpc(request_id, "tools/call", {"name": tool, "arguments": {"query": "key rotation"}})


async def test_mcp_initialize_list_and_permitted_tool_calls_pass(opa: OpaProcess) -> None:
    initialize = rpc(
        1,
        "initialize",
        {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "agent", "version": "1"},
        },
    )
    assert_allowed(await check(opa, MCP, mcp_post(initialize, scope=None)))
    assert_allowed(await check(opa, MCP, mcp_post({"jsonrpc": "2.0", "method": "notifications/initialized"})))
    allowed = assert_allowed(
        await check(opa, MCP, mcp_post([rpc(2, "tools/list"), tool_call(3, "search_docs")]))
    )
    assert allowed == {"x-auth-subject": "agent-researcher"}


async def test_mcp_tool_call_without_its_scope_is_403(opa: OpaProcess) -> None:
    response = await check(opa, MCP, mcp_post(tool_call(4, "create_ticket")))
    assert_denied(response, 403, "the token lacks the scope this tool needs")


async def test_mcp_unknown_tool_is_403(opa: OpaProcess) -> None:
    assert_denied(await check(opa, MCP, mcp_post(tool_call(5, "shell_exec"))), 403, "unknown tool")


async def test_mcp_batch_with_one_forbidden_call_is_403(opa: OpaProcess) -> None:
    batch = [rpc(6, "tools/list"), tool_call(7, "search_docs"), tool_call(8, "create_ticket")]
    assert_denied(await check(opa, MCP, mcp_post(batch)), 403, "the token lacks the scope this tool needs")


async def test_mcp_malformed_and_truncated_bodies_are_denied(opa: OpaProcess) -> None:
    not_rpc = await check(opa, MCP, mcp_post({"method": "tools/call", "params": {"name": "search_docs"}}))
    assert_denied(not_rpc, 400, "not a JSON-RPC 2.0 request or notification")
    truncated = await check(
        opa, MCP, mcp_post(tool_call(9, "search_docs"), **{"x-envoy-auth-partial-body": "true"})
    )
    assert_denied(truncated, 413, "the request body is truncated")
    # Not JSON at all: the sidecar refuses to build an input, and OPA is never asked.
    broken = await check(opa, MCP, mcp_post('{"jsonrpc": "2.0", "method": "tools/ca'))
    assert broken.status.code == PERMISSION_DENIED
    assert broken.dynamic_metadata["deny_reason"] == "bad_request"
    assert broken.denied_response.status.code == 400


async def test_mcp_without_token_is_401_pointing_at_resource_metadata(opa: OpaProcess) -> None:
    request = check_request(
        "POST",
        "/mcp",
        headers={"content-type": "application/json"},
        body=json.dumps(tool_call(10, "search_docs")),
    )
    headers = assert_denied(await check(opa, MCP, request), 401, "the MCP endpoint needs a bearer token")
    metadata = "https://mcp.example.com/.well-known/oauth-protected-resource"
    assert headers["www-authenticate"] == f'Bearer resource_metadata="{metadata}"'


async def test_mcp_token_for_another_audience_is_401(opa: OpaProcess) -> None:
    api_token = token(EC_KEY, "agent-researcher", API_AUDIENCE, scope=RESEARCHER_SCOPES)
    request = mcp_post(tool_call(11, "search_docs"), authorization=f"Bearer {api_token}")
    assert_denied(await check(opa, MCP, request), 401, "the Authorization header holds no valid bearer token")


# -- agents/jit ----------------------------------------------------------------------------------

JIT = "agents/jit/allow"


def deployer_request(action: str, principal: str = DEPLOYER) -> CheckRequest:
    method, path = action.split(" ", 1)
    return check_request(method, path, principal=principal)


@pytest.mark.parametrize("strict", [True, False], ids=["strict-builtin-errors", "lenient"])
async def test_jit_grant_inside_its_window_passes(opa: OpaProcess, strict: bool) -> None:
    request = deployer_request("POST /deployments/web/restart")
    response = await check(opa, JIT, request, strict_builtin_errors=strict)
    assert_allowed(response)
    assert response.dynamic_metadata["jit_grant"] == "active"


# Each action below has one grant in data that must grant nothing (or none at all).
REFUSED_ACTIONS = {
    "expired": "POST /deployments/web/rollback",
    "not yet valid": "POST /deployments/web/scale",
    "inverted bounds": "POST /deployments/web/pause",
    "malformed date": "POST /deployments/web/stop",
    "no time zone": "POST /deployments/web/drain",
    "missing bound": "POST /deployments/web/tag",
    "no grant": "DELETE /deployments/web",
}


@pytest.mark.parametrize("strict", [True, False], ids=["strict-builtin-errors", "lenient"])
async def test_jit_without_a_valid_active_grant_is_a_policy_deny(opa: OpaProcess, strict: bool) -> None:
    # A policy deny, not an OPA error: the malformed grants never reach a failing builtin.
    async with running_sidecar(
        opa.url, decision_path=JIT, opa_timeout=2.0, strict_builtin_errors=strict
    ) as sidecar:
        for case, action in REFUSED_ACTIONS.items():
            response = await sidecar.check(deployer_request(action), timeout=5.0)
            try:
                assert_denied(response, 403, "no grant covers this action now")
            except AssertionError as exc:
                raise AssertionError(f"{case}: {exc}") from None
        assert [entry["outcome"] for entry in sidecar.decisions()] == ["deny"] * len(REFUSED_ACTIONS)


async def test_jit_grant_is_for_its_subject_only(opa: OpaProcess) -> None:
    other = deployer_request(
        "POST /deployments/web/restart", principal="spiffe://example.org/ns/ops/sa/other"
    )
    assert_denied(await check(opa, JIT, other), 403, "no grant covers this action now")
    anonymous = deployer_request("POST /deployments/web/restart", principal="")
    assert_denied(await check(opa, JIT, anonymous), 403, "no verified peer identity")


# -- agents/secrets ------------------------------------------------------------------------------

SECRETS = "agents/secrets/allow"
BILLING_DB = "/v1/secret/data/billing/db"


async def test_secrets_entitled_read_with_a_store_token_passes(opa: OpaProcess) -> None:
    store_token = token(RSA_KEY, "svc-billing", SECRETS_AUDIENCE)
    response = await check(opa, SECRETS, check_request("GET", BILLING_DB, headers=bearer(store_token)))
    assert_allowed(response)
    assert response.dynamic_metadata["subject"] == "svc-billing"


async def test_secrets_token_for_the_store_and_more_is_403(opa: OpaProcess) -> None:
    broad = token(RSA_KEY, "svc-billing", [SECRETS_AUDIENCE, API_AUDIENCE])
    response = await check(opa, SECRETS, check_request("GET", BILLING_DB, headers=bearer(broad)))
    assert_denied(response, 403, "the token is not for this store alone")


async def test_secrets_token_for_another_audience_is_401(opa: OpaProcess) -> None:
    api_token = token(RSA_KEY, "svc-billing", API_AUDIENCE)
    response = await check(opa, SECRETS, check_request("GET", BILLING_DB, headers=bearer(api_token)))
    assert_denied(response, 401, "the Authorization header holds no valid bearer token for this store")


async def test_secrets_no_fallback_to_another_credential(opa: OpaProcess) -> None:
    store_token = token(RSA_KEY, "svc-billing", SECRETS_AUDIENCE)
    with_vault_token = check_request(
        "GET", BILLING_DB, headers={**bearer(store_token), "x-vault-token": "s.root"}
    )
    assert_denied(await check(opa, SECRETS, with_vault_token), 403, "a second credential is not accepted")
    peer_only = check_request("GET", BILLING_DB, principal="svc-billing")
    assert_denied(await check(opa, SECRETS, peer_only), 401, "the secrets store needs a bearer token")


async def test_secrets_path_outside_the_entitlement_is_403(opa: OpaProcess) -> None:
    store_token = token(RSA_KEY, "svc-billing", SECRETS_AUDIENCE)
    for method, path in (("GET", "/v1/secret/data/payroll/db"), ("PUT", BILLING_DB)):
        response = await check(opa, SECRETS, check_request(method, path, headers=bearer(store_token)))
        assert_denied(response, 403, "the subject is not entitled to this path")
