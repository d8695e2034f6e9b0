"""Client -> real Envoy in ext_authz HTTP mode (sidecar/envoy/templates/envoy-http.yaml)
-> the sidecar's HTTP listener -> OPA, in front of the echo upstream.

HTTP mode is the riskier wire: Envoy allows on exactly 200 and treats a 5xx, a reset or
a late answer as an error, which `failure_mode_allow: true` turns into an allow. So the
hostile half runs the same configuration with `failure_mode_allow: true` over every
OPA fault of the gRPC-mode hostile tests: each must still reach the client as a deny.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import Response, local_addresses, start_envoy, start_sidecar
from deploy.render import ENVOY_HTTP_TEMPLATE, render_envoy
from tests.e2e.envoy_wire import Reply, h2_request
from tests.e2e.stack import Stack, fail_open, wait_for
from tests.e2e.test_hostile_envoy import FAULTS
from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.opa import OpaProcess, start_opa

DECISION_HEADER = "x-opa-sidecar-decision-id"
MAX_REQUEST_BYTES = 8192  # the template's with_request_body.max_request_bytes

# Sets exactly the identity headers the template lets through (x-authz-policy,
# x-auth-subject), so what the upstream sees is what the shipped config passes.
POLICY = """\
package envoy.authz

import rego.v1

http := input.attributes.request.http

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "text/plain"},
	"body": "forbidden by the http-mode policy\\n",
}

# GET /allowed/...: the caller is alice; a debug header is stripped.
allow := {
	"allowed": true,
	"headers": {"x-auth-subject": "alice", "x-authz-policy": "http-e2e"},
	"request_headers_to_remove": ["x-internal-debug"],
} if {
	http.method == "GET"
	input.parsed_path[0] == "allowed"
}

# GET /anonymous/...: allowed without a subject.
allow := {"allowed": true, "headers": {"x-authz-policy": "anonymous"}} if {
	http.method == "GET"
	input.parsed_path[0] == "anonymous"
}

allow := {
	"allowed": false,
	"http_status": 429,
	"headers": {"retry-after": "7", "content-type": "text/plain"},
	"body": "slow down\\n",
} if {
	input.parsed_path[0] == "limited"
}

# /status/N: a deny asking for status N, which Envoy might read as an allow or an error.
allow := {"allowed": false, "http_status": to_number(input.parsed_path[1]), "body": "odd status\\n"} if {
	input.parsed_path[0] == "status"
}

# POST /orders: decided on the JSON body.
allow := {
	"allowed": true,
	"headers": {"x-authz-policy": sprintf("order:%s", [input.parsed_body.item])},
} if {
	http.method == "POST"
	input.parsed_path == ["orders"]
	input.parsed_body.quantity <= 10
}

allow := {"allowed": false, "http_status": 422, "body": "at most 10 per order\\n"} if {
	http.method == "POST"
	input.parsed_path == ["orders"]
	input.parsed_body.quantity > 10
}

# POST /upload: tells the upstream whether the policy saw the whole body.
allow := {
	"allowed": true,
	"headers": {"x-authz-policy": sprintf("truncated:%v", [input.truncated_body])},
} if {
	http.method == "POST"
	input.parsed_path == ["upload"]
}
"""


@contextlib.contextmanager
def running_http_stack(
    opa_url: str,
    *,
    envoy_fail_open: bool = False,
    sidecar_on_unix_socket: bool = False,
    sidecar_args: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Upstream, sidecar and Envoy in HTTP mode; everything stopped and removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="e2e-http-"))  # short: unix socket paths are limited
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        upstream = cleanup.enter_context(EchoUpstream())
        # Without an http_addr the sidecar's HTTP listener is a unix socket in workdir.
        http_addr = None if sidecar_on_unix_socket else "127.0.0.1:0"
        sidecar = start_sidecar(opa_url, workdir, http_addr=http_addr, extra_args=sidecar_args)
        cleanup.callback(sidecar.stop)
        config = render_envoy(local_addresses(upstream.addr, sidecar.http_addr), ENVOY_HTTP_TEMPLATE)
        envoy = start_envoy(fail_open(config) if envoy_fail_open else config, workdir)
        cleanup.callback(envoy.stop)
        yield Stack(upstream, sidecar, envoy, workdir)


def decision_of(stack: Stack, response: Response) -> dict[str, Any]:
    """The sidecar's decision log entry named by the response's decision id header."""
    decision_id = response.headers[DECISION_HEADER]
    assert decision_id, "no decision id reached the client"
    entry: dict[str, Any] = wait_for(
        lambda: next((e for e in stack.sidecar.decisions() if e["decision_id"] == decision_id), None)
    )
    return entry


@pytest.fixture(scope="module")
def http_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaProcess]:
    policy = tmp_path_factory.mktemp("http-mode-policy") / "authz.rego"
    policy.write_text(POLICY)
    opa = start_opa([policy])
    # The first evaluation compiles the policy; keep it out of the checks' budget.
    warm = opa.request("POST", "/v1/data/envoy/authz/allow", body=json.dumps({"input": {}}))
    assert warm.json()["result"]["allowed"] is False
    yield opa
    opa.stop()


@pytest.fixture(scope="module")
def http_stack(http_opa: OpaProcess) -> Iterator[Stack]:
    """Fail-closed Envoy in HTTP mode -> sidecar (HTTP listener on TCP) -> OPA."""
    with running_http_stack(http_opa.url) as stack:
        yield stack


@pytest.fixture(scope="module")
def hostile_http_stack(_fault_opa_session: FaultOpa) -> Iterator[Stack]:
    """Envoy in HTTP mode configured to fail OPEN -> sidecar -> the fault-injecting OPA."""
    with running_http_stack(_fault_opa_session.url, envoy_fail_open=True) as stack:
        yield stack


# --- fail-closed: what each side sees ----------------------------------------------


def test_allowed_request_reaches_the_upstream_with_the_policys_headers(http_stack: Stack) -> None:
    seen_before = len(http_stack.upstream.received)
    response = http_stack.envoy.request(
        "GET",
        "/allowed/profile?tab=1",
        headers={"x-auth-subject": "mallory", "x-internal-debug": "secret", "x-kept": "1"},
    )
    assert response.status == 200, response.text
    [echo] = http_stack.upstream.received[seen_before:]
    assert echo["path"] == "/allowed/profile?tab=1"  # not /ext_authz/...: the prefix is the check's only
    headers = echo["headers"]
    assert headers["x-auth-subject"] == ["alice"]  # the client's claim is replaced, not appended to
    assert headers["x-authz-policy"] == ["http-e2e"]
    assert "x-internal-debug" not in headers  # x-envoy-auth-headers-to-remove
    assert headers["x-kept"] == ["1"]
    # The sidecar's reply headers other than the listed ones stay between Envoy and the sidecar.
    assert DECISION_HEADER not in headers and DECISION_HEADER not in response.headers
    decision = http_stack.decision("/allowed/profile")
    assert decision["outcome"] == "allow"
    assert http_stack.access_log_line("/allowed/profile")["authz_decision_id"] == decision["decision_id"]


def test_identity_header_the_policy_does_not_set_never_comes_from_the_client(http_stack: Stack) -> None:
    response = http_stack.envoy.request(
        "GET", "/anonymous/page", headers={"x-auth-subject": "mallory", "x-authz-policy": "forged"}
    )
    assert response.status == 200, response.text
    headers = response.json()["headers"]
    assert "x-auth-subject" not in headers  # removed before ext_authz; the allow did not set it
    assert headers["x-authz-policy"] == ["anonymous"]


def test_denied_request_gets_the_policys_status_headers_and_body(http_stack: Stack) -> None:
    seen_before = len(http_stack.upstream.received)
    limited = http_stack.envoy.request("GET", "/limited/report")
    assert limited.status == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.headers["content-type"] == "text/plain"
    assert limited.body == b"slow down\n"
    decision = decision_of(http_stack, limited)
    assert (decision["outcome"], decision["reason"], decision["path"]) == (
        "deny",
        "policy_denied",
        "/limited/report",
    )
    assert http_stack.access_log_line("/limited/report")["authz_decision_id"] == decision["decision_id"]

    default = http_stack.envoy.request(
        "POST", "/admin", body=b"{}", headers={"content-type": "application/json"}
    )
    assert default.status == 403
    assert default.body == b"forbidden by the http-mode policy\n"
    assert len(http_stack.upstream.received) == seen_before


def test_json_body_reaches_the_policy_as_parsed_body(http_stack: Stack) -> None:
    json_headers = {"content-type": "application/json"}
    small = json.dumps({"item": "book", "quantity": 3})
    allowed = http_stack.envoy.request("POST", "/orders", headers=json_headers, body=small)
    assert allowed.status == 200, allowed.text
    echo = allowed.json()
    assert echo["headers"]["x-authz-policy"] == ["order:book"]
    assert echo["body"] == small

    large = json.dumps({"item": "book", "quantity": 30})
    refused = http_stack.envoy.request("POST", "/orders", headers=json_headers, body=large)
    assert (refused.status, refused.body) == (422, b"at most 10 per order\n")


def test_a_cut_body_reaches_the_policy_as_truncated_whatever_the_client_claims(http_stack: Stack) -> None:
    body = json.dumps({"item": "x" * 2 * MAX_REQUEST_BYTES})
    spoofed = {"content-type": "application/json", "x-envoy-auth-partial-body": "false"}
    cut = http_stack.envoy.request("POST", "/upload", headers=spoofed, body=body)
    assert cut.status == 200, cut.text
    assert cut.json()["headers"]["x-authz-policy"] == ["truncated:true"]
    assert cut.json()["body_bytes"] == len(body)  # the upstream still gets all of it
    assert "x-envoy-auth-partial-body" not in cut.json()["headers"]  # the client's copy is dropped

    whole = http_stack.envoy.request("POST", "/upload", headers=spoofed, body=b'{"small": true}')
    assert whole.json()["headers"]["x-authz-policy"] == ["truncated:false"]


def test_an_http2_client_gets_no_allow(http_stack: Stack) -> None:
    """The HTTP-mode listener takes HTTP/1.1 only (codec_type: HTTP1): the check is HTTP/1.1
    text, whose parsers trim what an HTTP/2 header value can keep at its ends."""
    received, decided = len(http_stack.upstream.received), len(http_stack.sidecar.decisions())
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"shop"),
        (b":path", b"/anonymous/h2"),
    ]
    try:
        reply: Reply | None = h2_request(
            http_stack.envoy.port, [*headers, (b"x-role", b" admin ")], timeout=5
        )
    except ConnectionError:
        reply = None  # Envoy's HTTP/1 codec refused the preface and closed
    assert reply is None or reply.status != 200, reply
    # The same request over HTTP/1.1 is allowed: only the protocol was refused.
    assert http_stack.envoy.request("GET", "/anonymous/h1").status == 200
    assert [r["path"] for r in http_stack.upstream.received[received:]] == ["/anonymous/h1"]
    assert [d["path"] for d in http_stack.sidecar.decisions()[decided:]] == ["/anonymous/h1"]
    refused = wait_for(lambda: next((e for e in http_stack.envoy.access_log() if e["status"] == 400), None))
    assert refused["details"] == "http1.codec_error"


@pytest.mark.parametrize("status", [200, 503])
def test_a_policy_deny_with_status_200_or_5xx_reaches_the_client_as_403(
    http_stack: Stack, status: int
) -> None:
    """Sent as is, 200 would be Envoy's allow and 503 its error (status_on_error here, an
    allow with fail-open); the sidecar answers the deny as 403 instead."""
    before = http_stack.authz_counters()
    seen_before = len(http_stack.upstream.received)
    response = http_stack.envoy.request("GET", f"/status/{status}")
    assert response.status == 403, response.text
    assert response.body == b"odd status\n"  # the policy's deny, not Envoy's error reply
    decision = decision_of(http_stack, response)
    assert (decision["reason"], decision["http_status"]) == ("policy_denied", status)
    after = http_stack.authz_counters()
    assert after["denied"] == before["denied"] + 1
    assert (after["error"], after["ok"]) == (before["error"], before["ok"])
    assert len(http_stack.upstream.received) == seen_before


def test_sidecar_on_a_unix_socket_and_then_down(http_opa: OpaProcess) -> None:
    """The unix-socket variant works; with the sidecar gone, the fail-closed
    configuration answers 503 (status_on_error), not an allow."""
    with running_http_stack(http_opa.url, sidecar_on_unix_socket=True) as stack:
        assert stack.sidecar.http_addr.startswith("unix:///")
        allowed = stack.envoy.request("GET", "/allowed/over-uds", headers={"x-auth-subject": "mallory"})
        assert allowed.status == 200, allowed.text
        assert allowed.json()["headers"]["x-auth-subject"] == ["alice"]
        denied = stack.envoy.request("GET", "/limited/over-uds")
        assert (denied.status, denied.body) == (429, b"slow down\n")

        stack.sidecar.kill()
        down = stack.envoy.request("GET", "/allowed/sidecar-down")
        assert down.status == 503
        counters = stack.authz_counters()
        assert (counters["ok"], counters["denied"], counters["error"]) == (1, 1, 1)
        assert counters["failure_mode_allowed"] == 0
        assert [r["path"] for r in stack.upstream.received] == ["/allowed/over-uds"]


# --- fail-open Envoy: the sidecar's denies still hold -------------------------------

HTTP_MODE_FAULTS = [
    *FAULTS,
    # HTTP mode cannot carry query-parameter changes, so such an allow is refused.
    pytest.param(
        Behaviour.json({"result": {"allowed": True, "query_parameters_to_remove": ["debug"]}}),
        "invalid_result",
        id="allow-needing-grpc-mode",
    ),
    # A header value Envoy would refuse must not turn the sidecar's reply into a 5xx.
    pytest.param(
        Behaviour.json({"result": {"allowed": True, "headers": {"x-auth-subject": "a\nb"}}}),
        "invalid_result",
        id="newline-in-header",
    ),
]


@pytest.mark.parametrize(("behaviour", "reason"), HTTP_MODE_FAULTS)
def test_every_opa_fault_is_denied_through_a_fail_open_envoy(
    hostile_http_stack: Stack,
    fault_opa: FaultOpa,
    behaviour: Behaviour,
    reason: str,
    request: pytest.FixtureRequest,
) -> None:
    fault_opa.set(behaviour)
    before = hostile_http_stack.authz_counters()
    seen_before = len(hostile_http_stack.upstream.received)
    path = f"/orders/{request.node.callspec.id}"

    response = hostile_http_stack.envoy.request("GET", path)

    assert response.status == 403, response.text
    assert fault_opa.count == 1
    assert len(hostile_http_stack.upstream.received) == seen_before
    after = hostile_http_stack.authz_counters()
    assert after["failure_mode_allowed"] == 0
    assert after["denied"] == before["denied"] + 1
    assert (after["error"], after["ok"]) == (before["error"], before["ok"])
    decision = decision_of(hostile_http_stack, response)
    assert (decision["path"], decision["reason"]) == (path, reason)
    assert hostile_http_stack.access_log_line(path)["authz_decision_id"] == decision["decision_id"]


@pytest.mark.parametrize(
    ("result", "status", "body"),
    [
        pytest.param({"allowed": False, "http_status": 200, "body": "no\n"}, 403, b"no\n", id="200"),
        pytest.param({"allowed": False, "http_status": 503, "body": "no\n"}, 403, b"no\n", id="503"),
        pytest.param({"allowed": False, "http_status": 401, "body": "who?\n"}, 401, b"who?\n", id="401"),
    ],
)
def test_the_policys_deny_holds_through_a_fail_open_envoy(
    hostile_http_stack: Stack, fault_opa: FaultOpa, result: dict[str, Any], status: int, body: bytes
) -> None:
    fault_opa.set(Behaviour.json({"result": result}))
    seen_before = len(hostile_http_stack.upstream.received)
    response = hostile_http_stack.envoy.request("GET", f"/orders/policy-{result['http_status']}")
    assert (response.status, response.body) == (status, body)
    assert len(hostile_http_stack.upstream.received) == seen_before
    assert hostile_http_stack.authz_counters()["failure_mode_allowed"] == 0


def test_a_valid_yes_still_allows_through_the_hostile_envoy(
    hostile_http_stack: Stack, fault_opa: FaultOpa
) -> None:
    """The control: the stack does let a real yes through, so the denials above mean something."""
    fault_opa.set(Behaviour.json({"result": {"allowed": True, "headers": {"x-auth-subject": "bob"}}}))
    response = hostile_http_stack.envoy.request("GET", "/orders/yes", headers={"x-auth-subject": "mallory"})
    assert response.status == 200, response.text
    assert response.json()["path"] == "/orders/yes"
    assert response.json()["headers"]["x-auth-subject"] == ["bob"]


def test_opa_down_is_denied_but_a_dead_sidecar_is_let_through_by_a_fail_open_envoy() -> None:
    """OPA down: the sidecar answers 403, and even this Envoy enforces it. Sidecar down:
    Envoy gets no answer, an error, and with fail-open lets the request through. A 5xx
    from the sidecar would be the same error, which is why HTTP mode never answers one
    and why deploy/envoy keeps failure_mode_allow: false."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        opa_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with running_http_stack(opa_url, envoy_fail_open=True) as stack:
            response = stack.envoy.request("GET", "/orders/opa-down")
            assert response.status == 403
            assert decision_of(stack, response)["reason"] == "opa_unreachable"
            assert stack.upstream.received == []
            counters = stack.authz_counters()
            assert (counters["denied"], counters["failure_mode_allowed"]) == (1, 0)

            stack.sidecar.kill()
            response = stack.envoy.request("GET", "/orders/sidecar-down")
            assert response.status == 200
            assert [r["path"] for r in stack.upstream.received] == ["/orders/sidecar-down"]
            assert stack.authz_counters()["failure_mode_allowed"] == 1


def test_more_checks_in_flight_than_the_connection_cap_are_denied_through_a_fail_open_envoy(
    fault_opa: FaultOpa,
) -> None:
    """Envoy opens a connection per check in flight. Past --http-max-connections,
    with every connection answering a check, the sidecar still reads each new one
    and answers it `overloaded`: a deny. Closing them unanswered was an error,
    which this Envoy let through."""
    cap, clients = 4, 8  # the over-cap connections taken: as many as the cap
    fault_opa.set(Behaviour.delayed(0.1, then=Behaviour.json({"result": False})))
    args = ("--http-max-connections", str(cap))
    with running_http_stack(fault_opa.url, envoy_fail_open=True, sidecar_args=args) as stack:
        before = stack.authz_counters()
        with ThreadPoolExecutor(clients) as pool:
            statuses = list(pool.map(lambda i: stack.envoy.request("GET", f"/orders/{i}").status, range(64)))
        after = stack.authz_counters()
        reasons = Counter(d["reason"] for d in stack.sidecar.decisions())
        assert stack.upstream.received == []
    assert statuses == [403] * 64
    errors = {name: after[name] - before[name] for name in ("error", "failure_mode_allowed")}
    assert errors == {"error": 0, "failure_mode_allowed": 0}
    assert reasons["policy_denied"] > 0
    assert reasons["overloaded"] > 0, reasons  # the cap was passed: the case under test
