"""Every fault between the sidecar and OPA ends in a deny CheckResponse, in time,
with exactly one OPA request (or none, where none should be made)."""

from __future__ import annotations

import asyncio
import http
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar.envoy.response import PERMISSION_DENIED
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar

BUDGET = 0.15
# Tests about what OPA says, not when, get a budget a loaded machine cannot exhaust.
GENEROUS_BUDGET = 2.0


@pytest.fixture
async def sidecar(fault_opa: FaultOpa) -> AsyncIterator[SidecarHandle]:
    async with running_sidecar(fault_opa.url, opa_timeout=GENEROUS_BUDGET) as handle:
        yield handle


def assert_denied(response: CheckResponse, reason: str, http_status: int = 403) -> None:
    assert response.status.code == PERMISSION_DENIED, response
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.denied_response.status.code == http_status
    assert response.dynamic_metadata["deny_reason"] == reason
    assert response.dynamic_metadata["decision_id"]


async def deny_for(sidecar: SidecarHandle, fault: FaultOpa, behaviour: Behaviour, reason: str) -> float:
    fault.set(behaviour)
    started = time.monotonic()
    response = await sidecar.check(check_request("GET", "/orders"), timeout=2.0)
    elapsed = time.monotonic() - started
    assert_denied(response, reason)
    assert fault.count == 1
    [entry] = sidecar.decisions()
    assert (entry["outcome"], entry["reason"]) == ("deny", reason)
    return elapsed


async def test_a_valid_yes_allows_after_one_request(sidecar: SidecarHandle, fault_opa: FaultOpa) -> None:
    response = await sidecar.check(check_request("GET", "/orders?id=7", headers={"x-user": "alice"}))
    assert response.status.code == 0
    assert response.WhichOneof("http_response") == "ok_response"
    [request] = fault_opa.requests
    assert request.method == "POST"
    assert request.path == "/v1/data/envoy/authz/allow"
    assert request.params == {"strict-builtin-errors": ["true"]}
    sent = request.json()
    assert set(sent) == {"input"}
    assert sent["input"]["parsed_path"] == ["orders"]
    assert sent["input"]["parsed_query"] == {"id": ["7"]}
    assert sent["input"]["attributes"]["request"]["http"]["headers"]["x-user"] == "alice"
    assert sidecar.decisions()[0]["outcome"] == "allow"


async def test_lenient_mode_does_not_ask_for_strict_builtin_errors(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url, strict_builtin_errors=False) as handle:
        assert (await handle.check(check_request())).status.code == 0
    assert fault_opa.requests[0].params == {}


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connects are refused
        async with running_sidecar(f"http://127.0.0.1:{port}") as handle:
            assert_denied(await handle.check(check_request()), "opa_unreachable")


async def test_missing_unix_socket(tmp_path: Any) -> None:
    async with running_sidecar(f"unix://{tmp_path}/nothing.sock") as handle:
        assert_denied(await handle.check(check_request()), "opa_unreachable")


async def test_closed_before_answering(sidecar: SidecarHandle, fault_opa: FaultOpa) -> None:
    await deny_for(sidecar, fault_opa, Behaviour.close_early(), "opa_unreachable")


async def test_reset_mid_response(sidecar: SidecarHandle, fault_opa: FaultOpa) -> None:
    await deny_for(sidecar, fault_opa, Behaviour.reset_mid_body(after=0.02), "opa_unreachable")


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(Behaviour.delayed(3.0), id="headers-late"),
        pytest.param(Behaviour.hang(), id="no-answer"),
        pytest.param(Behaviour.stalled(3.0), id="body-late"),
        pytest.param(Behaviour.slow_drip(0.2), id="slow-drip"),
    ],
)
async def test_slower_than_the_budget(fault_opa: FaultOpa, behaviour: Behaviour) -> None:
    async with running_sidecar(fault_opa.url, opa_timeout=BUDGET) as sidecar:
        elapsed = await deny_for(sidecar, fault_opa, behaviour, "opa_timeout")
    assert BUDGET * 0.9 <= elapsed < BUDGET + 0.5


NON_200 = [s.value for s in http.HTTPStatus if s.value >= 201 or s.value == 100]


@pytest.mark.parametrize("status", [s for s in NON_200 if s >= 201])
async def test_every_other_status(sidecar: SidecarHandle, fault_opa: FaultOpa, status: int) -> None:
    body = b"" if status in (204, 304) else b'{"result":true}\n'
    await deny_for(sidecar, fault_opa, Behaviour.answer(status, body), "opa_http_status")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_never_followed(sidecar: SidecarHandle, fault_opa: FaultOpa, status: int) -> None:
    await deny_for(
        sidecar, fault_opa, Behaviour.redirect(fault_opa.url + "/v1/data/other", status), "opa_http_status"
    )


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        pytest.param({}, "undefined", id="undefined"),
        pytest.param({"decision_id": "x"}, "undefined", id="undefined-with-id"),
        pytest.param({"result": None}, "invalid_result", id="null"),
        pytest.param({"result": "true"}, "invalid_result", id="string-true"),
        pytest.param({"result": 1}, "invalid_result", id="one"),
        pytest.param({"result": [True]}, "invalid_result", id="array"),
        pytest.param({"result": {"headers": {}}}, "invalid_result", id="no-allowed"),
        pytest.param({"result": {"allowed": "yes"}}, "invalid_result", id="allowed-string"),
        pytest.param({"result": {"allowed": True, "headers": "x"}}, "invalid_result", id="headers-string"),
        pytest.param(
            {"result": {"allowed": True, "headers": {"x-a": 1}}}, "invalid_result", id="header-number"
        ),
        pytest.param(
            {"result": {"allowed": False, "http_status": "401"}}, "invalid_result", id="status-string"
        ),
        pytest.param({"result": {"allowed": False, "http_status": 99}}, "invalid_result", id="status-range"),
        pytest.param({"result": {"allowed": False, "body": ["x"]}}, "invalid_result", id="body-array"),
        pytest.param({"result": False}, "policy_denied", id="false"),
    ],
)
async def test_answers_that_are_not_a_valid_yes(
    sidecar: SidecarHandle, fault_opa: FaultOpa, result: dict[str, Any], reason: str
) -> None:
    await deny_for(sidecar, fault_opa, Behaviour.json(result), reason)


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(Behaviour.answer(body=b'{"result": tru'), id="invalid-json"),
        pytest.param(Behaviour.answer(body=b'{"result":true,"result":false}'), id="duplicate-keys"),
        pytest.param(
            Behaviour.answer(body=b'{"result":{"allowed":false,"allowed":true}}'), id="duplicate-nested"
        ),
        pytest.param(Behaviour.answer(body=b'{"result":true}{"result":true}'), id="two-documents"),
        pytest.param(Behaviour.answer(body=b'{"result":NaN}'), id="nan"),
        pytest.param(Behaviour.answer(body=b""), id="empty-body"),
        pytest.param(Behaviour.answer(body=b'[{"result":true}]'), id="top-level-array"),
        pytest.param(Behaviour.wrong_content_type("text/html"), id="content-type"),
        pytest.param(Behaviour.answer(content_type=None), id="no-content-type"),
        pytest.param(Behaviour.answer(headers=(("Content-Encoding", "gzip"),)), id="unrequested-encoding"),
        pytest.param(
            replace(Behaviour.answer(headers=(("Content-Length", "99"),)), keep_alive=False),
            id="truncated-by-content-length",
        ),
        pytest.param(Behaviour.truncated_chunked(), id="truncated-chunked"),
        pytest.param(Behaviour.huge(2 << 20), id="oversized"),
        pytest.param(Behaviour.huge(2 << 20, chunked=True), id="oversized-chunked"),
        pytest.param(
            Behaviour.raw(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"result":true}'),
            id="no-length-until-close",
        ),
        pytest.param(Behaviour.raw(b"garbage\r\n\r\n"), id="not-http"),
        pytest.param(
            Behaviour.answer(headers=(("Content-Length", "16"), ("Content-Length", "17"))), id="two-lengths"
        ),
    ],
)
async def test_malformed_answers(sidecar: SidecarHandle, fault_opa: FaultOpa, behaviour: Behaviour) -> None:
    await deny_for(sidecar, fault_opa, behaviour, "opa_bad_response")


async def test_an_extra_response_never_answers_the_next_check(
    sidecar: SidecarHandle, fault_opa: FaultOpa
) -> None:
    # A server that sends two responses to one request: the spare "yes" must
    # not be read as the answer to the following check.
    two = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{"result":false}\n'
    spare = (
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"result":true}\n'
    )
    fault_opa.set(Behaviour.raw(two + spare))
    assert_denied(await sidecar.check(check_request()), "policy_denied")
    fault_opa.set(Behaviour.json({"result": False}))
    assert_denied(await sidecar.check(check_request()), "policy_denied")
    assert fault_opa.count == 2


async def test_a_deadline_shorter_than_the_budget_is_honoured(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.hang())
    async with running_sidecar(fault_opa.url, opa_timeout=5.0) as handle:
        started = time.monotonic()
        response = await handle.check(check_request(), timeout=0.3)
        elapsed = time.monotonic() - started
    assert_denied(response, "opa_timeout")
    assert elapsed < 0.3
    assert fault_opa.count == 1


class _Context:
    """Stands in for grpc's servicer context with a chosen deadline."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def add_done_callback(self, callback: object) -> None:
        pass


@pytest.mark.parametrize("remaining", [-1.0, 0.0, 0.005])
async def test_a_deadline_already_past_makes_no_opa_request(
    sidecar: SidecarHandle, fault_opa: FaultOpa, remaining: float
) -> None:
    raw = await sidecar.sidecar.service.check(check_request().SerializeToString(), _Context(remaining))  # type: ignore[arg-type]
    assert_denied(CheckResponse.FromString(raw), "deadline_exceeded")
    assert fault_opa.count == 0


async def test_over_max_inflight_is_denied_at_once(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.delayed(0.4))
    async with running_sidecar(fault_opa.url, opa_timeout=1.0, max_inflight=2) as handle:
        slow = [asyncio.create_task(handle.check(check_request())) for _ in range(2)]
        assert await asyncio.to_thread(fault_opa.wait_for_count, 2, 2.0)
        started = time.monotonic()
        extra = await handle.check(check_request())
        assert time.monotonic() - started < 0.2
        assert_denied(extra, "overloaded")
        assert [r.status.code for r in await asyncio.gather(*slow)] == [0, 0]
    assert fault_opa.count == 2


async def test_undecodable_request_is_a_bad_request_deny(sidecar: SidecarHandle, fault_opa: FaultOpa) -> None:
    raw = await sidecar.sidecar.service.check(b"\xff\xff\xff", _Context(1.0))  # type: ignore[arg-type]
    assert_denied(CheckResponse.FromString(raw), "bad_request", http_status=400)
    assert fault_opa.count == 0


async def test_unparsable_path_is_a_bad_request_deny(sidecar: SidecarHandle, fault_opa: FaultOpa) -> None:
    response = await sidecar.check(check_request("GET", "/a%zz"))
    assert_denied(response, "bad_request", http_status=400)
    assert fault_opa.count == 0


def _boom(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected")


@pytest.mark.parametrize(
    "target",
    [
        "sidecar.authorizer.build_input",
        "sidecar.authorizer.opa_request_body",
        "sidecar.authorizer.interpret",
        "sidecar.envoy.service.build_response",
    ],
)
async def test_an_exception_anywhere_is_a_deny(
    sidecar: SidecarHandle, fault_opa: FaultOpa, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.setattr(target, _boom)
    assert_denied(await sidecar.check(check_request()), "internal_error")
    assert sidecar.decisions()[0]["reason"] == "internal_error"


async def test_an_exception_inside_the_opa_client_is_a_deny(
    sidecar: SidecarHandle, fault_opa: FaultOpa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidecar.opa.client.loads_object", _boom)
    assert_denied(await sidecar.check(check_request()), "internal_error")
    assert fault_opa.count == 1


async def test_an_allow_that_cannot_be_logged_is_denied(
    sidecar: SidecarHandle, fault_opa: FaultOpa, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidecar.sidecar.recorder._decisions, "record", _boom)
    assert_denied(await sidecar.check(check_request()), "internal_error")


async def test_policy_metadata_cannot_spoof_the_decision_id(
    sidecar: SidecarHandle, fault_opa: FaultOpa
) -> None:
    fault_opa.set(Behaviour.json({"result": {"allowed": True, "dynamic_metadata": {"decision_id": "fake"}}}))
    response = await sidecar.check(check_request())
    assert response.dynamic_metadata["decision_id"] == sidecar.decisions()[0]["decision_id"] != "fake"


def test_fault_list_is_json() -> None:
    json.dumps(NON_200)


async def test_an_oversized_request_is_denied_before_parsing(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url, max_request_bytes=4096) as sidecar:
        big = check_request("POST", "/upload", body="x" * 8000, headers={"content-type": "text/plain"})
        response = await sidecar.check(big)
        small = await sidecar.check(
            check_request("POST", "/upload", body="x" * 100, headers={"content-type": "text/plain"})
        )
    assert_denied(response, "bad_request", http_status=413)
    assert small.status.code == 0
    assert fault_opa.count == 1


async def test_a_request_over_grpcs_default_limit_still_gets_a_deny_response(fault_opa: FaultOpa) -> None:
    # Over gRPC's 4 MiB default: without the sidecar's own limit this would be
    # an error status, which a fail-open Envoy lets through.
    async with running_sidecar(fault_opa.url) as sidecar:
        huge = check_request("POST", "/upload", body="x" * (5 << 20), headers={"content-type": "text/plain"})
        response = await sidecar.check(huge, timeout=10.0)
    assert_denied(response, "bad_request", http_status=413)
    assert fault_opa.count == 0


async def test_a_check_the_caller_cancels_is_still_in_the_decision_log(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.hang())
    async with running_sidecar(fault_opa.url, opa_timeout=5.0) as sidecar:
        call = sidecar.stub.Check(check_request(), timeout=5.0)
        assert await asyncio.to_thread(fault_opa.wait_for_count, 1, 5.0)
        call.cancel()
        for _ in range(100):
            if sidecar.decisions():
                break
            await asyncio.sleep(0.02)
        [entry] = sidecar.decisions()
    assert (entry["outcome"], entry["reason"]) == ("deny", "deadline_exceeded")
    assert "cancelled" in entry["detail"]
