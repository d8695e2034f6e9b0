"""ext_authz HTTP mode and the JSON check API: the same fail-closed pipeline,
and a deny is never a 200 nor a 5xx (which Envoy could let through)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar


@dataclass
class Http:
    sidecar: SidecarHandle
    session: aiohttp.ClientSession
    base: str


@pytest.fixture
async def http(fault_opa: FaultOpa) -> AsyncIterator[Http]:
    async with running_sidecar(fault_opa.url) as sidecar, aiohttp.ClientSession() as session:
        yield Http(sidecar, session, f"http://127.0.0.1:{sidecar.sidecar.http.port}")


async def ext_authz(
    http: Http, method: str = "GET", path: str = "/orders", **kwargs: Any
) -> tuple[int, Any, str]:
    url = URL(http.base + "/ext_authz" + path, encoded=True)  # sent as written, escapes and all
    async with http.session.request(method, url, **kwargs) as resp:
        return resp.status, resp.headers, await resp.text()


async def test_allow_is_exactly_200_with_the_policy_headers(http: Http, fault_opa: FaultOpa) -> None:
    fault_opa.set(
        Behaviour.json(
            {
                "result": {
                    "allowed": True,
                    "headers": {"x-user": "alice"},
                    "request_headers_to_remove": ["x-debug", "x-trace"],
                }
            }
        )
    )
    status, headers, _ = await ext_authz(
        http,
        "POST",
        "/v1/items?tag=a&kind=b",
        headers={"content-type": "application/json", "host": "shop.example", "authorization": "Bearer t"},
        data=b'{"qty": 3}',
    )
    assert status == 200
    assert headers["x-user"] == "alice"
    assert headers["x-envoy-auth-headers-to-remove"] == "x-debug, x-trace"
    decision_id = headers["x-opa-sidecar-decision-id"]
    assert http.sidecar.decisions()[0]["decision_id"] == decision_id
    [request] = fault_opa.requests
    sent = request.json()["input"]
    assert sent["parsed_path"] == ["v1", "items"]
    assert sent["parsed_query"] == {"tag": ["a"], "kind": ["b"]}
    assert sent["parsed_body"] == {"qty": 3}
    attrs = sent["attributes"]["request"]["http"]
    assert (attrs["method"], attrs["path"], attrs["host"]) == (
        "POST",
        "/v1/items?tag=a&kind=b",
        "shop.example",
    )
    assert attrs["headers"]["authorization"] == "Bearer t"
    assert attrs["headers"][":path"] == "/v1/items?tag=a&kind=b"


async def test_policy_deny_keeps_status_headers_and_body(http: Http, fault_opa: FaultOpa) -> None:
    fault_opa.set(
        Behaviour.json(
            {
                "result": {
                    "allowed": False,
                    "http_status": 401,
                    "headers": {"www-authenticate": "Bearer"},
                    "body": "no",
                }
            }
        )
    )
    status, headers, body = await ext_authz(http)
    assert (status, headers["www-authenticate"], body) == (401, "Bearer", "no")


@pytest.mark.parametrize("policy_status", [200, 500, 503])
async def test_a_deny_status_envoy_would_not_enforce_becomes_403(
    http: Http, fault_opa: FaultOpa, policy_status: int
) -> None:
    fault_opa.set(Behaviour.json({"result": {"allowed": False, "http_status": policy_status}}))
    assert (await ext_authz(http))[0] == 403


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        pytest.param(Behaviour.json({}), "undefined", id="undefined"),
        pytest.param(Behaviour.json({"result": "true"}), "invalid_result", id="wrong-type"),
        pytest.param(Behaviour.answer(500), "opa_http_status", id="opa-500"),
        pytest.param(Behaviour.redirect("http://127.0.0.1:1/"), "opa_http_status", id="redirect"),
        pytest.param(Behaviour.answer(body=b"{garbage"), "opa_bad_response", id="garbage"),
        pytest.param(Behaviour.truncated_chunked(), "opa_bad_response", id="truncated"),
        pytest.param(Behaviour.close_early(), "opa_unreachable", id="closed"),
        pytest.param(Behaviour.hang(), "opa_timeout", id="hang"),
        pytest.param(
            Behaviour.json({"result": {"allowed": True, "query_parameters_to_remove": ["token"]}}),
            "invalid_result",
            id="query-mutation",
        ),
    ],
)
async def test_every_failure_is_a_403(
    http: Http, fault_opa: FaultOpa, behaviour: Behaviour, reason: str
) -> None:
    fault_opa.set(behaviour)
    status, headers, _ = await ext_authz(http)
    assert status == 403
    [entry] = http.sidecar.decisions()
    assert (entry["reason"], entry["decision_id"]) == (reason, headers["x-opa-sidecar-decision-id"])
    assert fault_opa.count == 1


async def test_envoys_timeout_bounds_the_wait(http: Http, fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.hang())
    started = time.monotonic()
    status, _, _ = await ext_authz(http, headers={"x-envoy-expected-rq-timeout-ms": "100"})
    assert status == 403
    assert time.monotonic() - started < 0.1


async def test_unparsable_request_is_400(http: Http, fault_opa: FaultOpa) -> None:
    assert (await ext_authz(http, path="/a%zz"))[0] == 400
    assert fault_opa.count == 0


async def test_failure_status_is_configurable(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.answer(500))
    async with running_sidecar(fault_opa.url, http_failure_status=401) as sidecar:
        url = f"http://127.0.0.1:{sidecar.sidecar.http.port}/ext_authz/x"
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            assert resp.status == 401


async def check_json(http: Http, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.session.post(http.base + "/v1/check", data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_json_api_allows_and_denies(http: Http, fault_opa: FaultOpa) -> None:
    document = {"tool": "search", "subject": "agent-7"}
    status, answer = await check_json(http, json.dumps(document).encode())
    assert (status, answer["allowed"], answer["reason"]) == (200, True, "allowed")
    assert fault_opa.requests[0].json() == {"input": document}
    fault_opa.set(Behaviour.json({"result": False}))
    status, answer = await check_json(http, b"{}")
    assert (status, answer["allowed"], answer["reason"]) == (403, False, "policy_denied")
    assert answer["decision_id"] == http.sidecar.decisions()[1]["decision_id"]


@pytest.mark.parametrize("body", [b"", b"[]", b"nope", b'{"a":1,"a":2}', b'"x"'])
async def test_json_api_refuses_anything_but_one_object(http: Http, fault_opa: FaultOpa, body: bytes) -> None:
    status, answer = await check_json(http, body)
    assert (status, answer["allowed"], answer["reason"]) == (403, False, "bad_request")
    assert fault_opa.count == 0


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (Behaviour.json({}), "undefined"),
        (Behaviour.answer(503), "opa_http_status"),
        (Behaviour.hang(), "opa_timeout"),
        (Behaviour.json({"result": {"allowed": 1}}), "invalid_result"),
    ],
)
async def test_json_api_failures_deny(
    http: Http, fault_opa: FaultOpa, behaviour: Behaviour, reason: str
) -> None:
    fault_opa.set(behaviour)
    status, answer = await check_json(http, b'{"a": 1}')
    assert (status, answer["allowed"], answer["reason"]) == (403, False, reason)


async def test_json_api_timeout_header(http: Http, fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.hang())
    started = time.monotonic()
    status, answer = await check_json(http, b"{}", headers={"timeout": "0.05"})
    assert (status, answer["reason"]) == (403, "opa_timeout")
    assert time.monotonic() - started < 0.1
    status, answer = await check_json(http, b"{}", headers={"timeout": "soon"})
    assert (status, answer["reason"]) == (403, "deadline_exceeded")


async def raw_exchange(http: Http, head: bytes, body: bytes = b"") -> bytes:
    """Write one request as given (repeated headers and all) and read until the server closes."""
    port = http.sidecar.sidecar.http.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"\r\nconnection: close\r\n\r\n" + body)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "expect",
    [[b"100-continue", b"100-continue"], [b"100-continue, 100-continue"], [b"something-else"]],
    ids=["repeated", "joined", "unknown"],
)
async def test_a_forwarded_expect_is_a_header_for_the_policy(
    http: Http, fault_opa: FaultOpa, expect: list[bytes]
) -> None:
    """Envoy forwards a client's Expect that is not one 100-continue; the check is decided
    and recorded like any other, never refused by the HTTP server (417)."""
    fault_opa.set(Behaviour.json({"result": False}))
    lines = [b"POST /ext_authz/upload HTTP/1.1", b"host: shop", b"content-type: application/json"]
    lines.append(b"content-length: 2")
    reply = await raw_exchange(http, b"\r\n".join(lines + [b"expect: " + value for value in expect]), b"{}")
    assert reply.startswith(b"HTTP/1.1 403 "), reply
    assert b" 100 Continue" not in reply  # Envoy sent the body already
    [entry] = http.sidecar.decisions()
    assert entry["reason"] == "policy_denied"
    assert entry["decision_id"].encode() in reply
    [request] = fault_opa.requests
    headers = request.json()["input"]["attributes"]["request"]["http"]["headers"]
    assert headers["expect"] == ",".join(value.decode() for value in expect)


async def test_json_api_answers_100_continue_and_decides_on_any_other_expect(
    http: Http, fault_opa: FaultOpa
) -> None:
    head = b"POST /v1/check HTTP/1.1\r\nhost: sidecar\r\ncontent-length: 2\r\nexpect: "
    reply = await raw_exchange(http, head + b"100-continue", b"{}")
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), reply
    reply = await raw_exchange(http, head + b"something-else", b"{}")
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert [entry["outcome"] for entry in http.sidecar.decisions()] == ["allow", "allow"]
