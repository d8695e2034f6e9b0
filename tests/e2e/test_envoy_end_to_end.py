"""Client -> real Envoy (deploy/envoy configuration) -> sidecar process -> OPA, and the
upstream behind it: what each side sees."""

from __future__ import annotations

import json

from tests.e2e.stack import Stack, running_stack
from tests.fixtures.opa import OpaProcess

BIG_BODY_BYTES = 20_000  # over the configuration's max_request_bytes (8192)


def big_json_body() -> bytes:
    body = json.dumps({"item": "x" * BIG_BODY_BYTES}).encode()
    assert len(body) > 8192
    return body


def test_allowed_request_reaches_the_upstream_as_the_policy_shaped_it(e2e_stack: Stack) -> None:
    seen_before = len(e2e_stack.upstream.received)
    response = e2e_stack.envoy.request(
        "GET",
        "/allowed/profile",
        headers={"x-user-id": "mallory", "x-internal-debug": "secret", "x-kept": "1"},
    )
    assert response.status == 200, response.text
    assert response.headers["x-authz-decision"] == "allowed"
    [echo] = e2e_stack.upstream.received[seen_before:]
    assert response.json() == echo
    headers = echo["headers"]
    assert headers["x-user-id"] == ["alice"]  # the client's claim is overwritten, not appended
    assert headers["x-authz-policy"] == ["e2e"]
    assert "x-internal-debug" not in headers
    assert headers["x-kept"] == ["1"]
    assert e2e_stack.decision("/allowed/profile")["outcome"] == "allow"


def test_denied_request_gets_the_policys_status_headers_and_body(e2e_stack: Stack) -> None:
    seen_before = len(e2e_stack.upstream.received)
    limited = e2e_stack.envoy.request("GET", "/limited/report")
    assert limited.status == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.headers["x-e2e-deny"] == "limited"
    assert limited.body == b"slow down\n"

    default = e2e_stack.envoy.request(
        "POST", "/admin", body=b"{}", headers={"content-type": "application/json"}
    )
    assert default.status == 403
    assert default.headers["x-e2e-deny"] == "default"
    assert default.body == b"forbidden by the e2e policy\n"
    assert len(e2e_stack.upstream.received) == seen_before


def test_json_body_reaches_the_policy_as_parsed_body(e2e_stack: Stack) -> None:
    json_headers = {"content-type": "application/json"}
    small = json.dumps({"item": "book", "quantity": 3})
    allowed = e2e_stack.envoy.request("POST", "/orders", headers=json_headers, body=small)
    assert allowed.status == 200, allowed.text
    echo = allowed.json()
    assert echo["headers"]["x-order-item"] == ["book"]
    assert echo["body"] == small

    large = json.dumps({"item": "book", "quantity": 30})
    refused = e2e_stack.envoy.request("POST", "/orders", headers=json_headers, body=large)
    assert refused.status == 422
    assert refused.body == b"at most 10 per order\n"


def test_body_over_the_limit_reaches_the_policy_as_truncated(e2e_stack: Stack) -> None:
    """allow_partial_message: the policy gets the first 8 KiB and truncated_body: true."""
    json_headers = {"content-type": "application/json"}
    whole = e2e_stack.envoy.request("POST", "/upload", headers=json_headers, body=b'{"small": true}')
    assert whole.status == 200, whole.text
    assert whole.json()["headers"]["x-body-seen"] == ["whole"]

    cut = e2e_stack.envoy.request("POST", "/upload", headers=json_headers, body=big_json_body())
    # The policy's deny (its body), not Envoy's own 413 for an oversized body.
    assert cut.status == 413
    assert cut.body == b"body too large to authorize\n"
    denials = [d for d in e2e_stack.sidecar.decisions() if d.get("path") == "/upload"]
    assert [d["outcome"] for d in denials] == ["allow", "deny"]
    assert denials[1]["http_status"] == 413


def test_client_cannot_claim_a_cut_body_is_whole(e2e_stack: Stack) -> None:
    spoofed = {"content-type": "application/json", "x-envoy-auth-partial-body": "false"}
    response = e2e_stack.envoy.request("POST", "/upload", headers=spoofed, body=big_json_body())
    assert response.status == 413, response.text


def test_the_upstream_gets_the_whole_body_the_policy_saw_part_of(e2e_stack: Stack) -> None:
    body = big_json_body()
    response = e2e_stack.envoy.request(
        "POST", "/upload-any", headers={"content-type": "application/json"}, body=body
    )
    assert response.status == 200, response.text
    echo = response.json()
    assert echo["headers"]["x-body-truncated"] == ["true"]
    assert echo["body_bytes"] == len(body)


def test_dot_segments_are_resolved_before_the_policy_sees_the_path(e2e_stack: Stack) -> None:
    # Checked as /secret (denied), not as /allowed/../secret (which the policy would allow).
    response = e2e_stack.envoy.request("GET", "/allowed/../secret")
    assert response.status == 403
    assert e2e_stack.decision("/secret")["outcome"] == "deny"


def test_access_log_carries_the_sidecars_decision_id(e2e_stack: Stack) -> None:
    assert e2e_stack.envoy.request("GET", "/limited/logged").status == 429
    assert e2e_stack.envoy.request("GET", "/allowed/logged").status == 200
    for path, reason in [("/limited/logged", "policy_denied"), ("/allowed/logged", None)]:
        line = e2e_stack.access_log_line(path)
        decision = e2e_stack.decision(path)
        assert line["authz_decision_id"] == decision["decision_id"]
        assert line["authz_deny_reason"] == reason
        assert line["flags"] == ("UAEX" if reason else "-")


def test_sidecar_down_is_a_503_from_a_fail_closed_envoy(e2e_opa: OpaProcess) -> None:
    with running_stack(e2e_opa.url) as stack:
        assert stack.envoy.request("GET", "/allowed/before").status == 200
        stack.sidecar.kill()
        response = stack.envoy.request("GET", "/allowed/after")
        assert response.status == 503  # status_on_error: an outage, not a policy deny
        counters = stack.authz_counters()
        assert (counters["ok"], counters["error"], counters["failure_mode_allowed"]) == (1, 1, 0)
        assert [r["path"] for r in stack.upstream.received] == ["/allowed/before"]


def test_sidecar_on_a_unix_socket(e2e_opa: OpaProcess) -> None:
    with running_stack(e2e_opa.url, sidecar_on_unix_socket=True) as stack:
        assert stack.sidecar.grpc_addr.startswith("unix:///")
        allowed = stack.envoy.request("GET", "/allowed/over-uds", headers={"x-user-id": "mallory"})
        assert allowed.status == 200, allowed.text
        assert allowed.json()["headers"]["x-user-id"] == ["alice"]
        denied = stack.envoy.request("GET", "/limited/over-uds")
        assert (denied.status, denied.body) == (429, b"slow down\n")
