"""The same requests through the shipped gRPC-mode and HTTP-mode configurations, with the
same policy: the same decisions, and the same input documents but for the fields HTTP
mode cannot carry (README, "ext_authz HTTP mode and the JSON check API"). Sent over
HTTP/1.1, the one protocol both listeners take."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.envoy_wire import Reply, h1_request
from tests.e2e.stack import Stack
from tests.e2e.two_modes import Seen, running_mode_stack, send
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest

# What gRPC mode gives the policy and HTTP mode cannot: Envoy's HTTP call to the sidecar
# carries no peer addresses, stream id, client protocol or metadata, no header bytes
# (encode_raw_headers), and a Content-Length of its own in place of the client's.
GRPC_ONLY_FIELDS = (
    ("attributes", "source"),
    ("attributes", "destination"),
    ("attributes", "metadataContext"),
    ("attributes", "routeMetadataContext"),
    ("attributes", "request", "http", "id"),
    ("attributes", "request", "http", "protocol"),
    ("attributes", "request", "http", "headerMap"),
    ("attributes", "request", "http", "headers", "content-length"),
)
# Present in both modes, with a value of each request: Envoy's request id, and the time
# (Envoy's in gRPC mode, the sidecar's clock when the check arrived in HTTP mode).
REQUEST_ID = ("attributes", "request", "http", "headers", "x-request-id")
TIME = ("attributes", "request", "time")

CREDENTIALS = ("authorization", "proxy-authorization", "cookie", "x-api-key")


def policy(request: RecordedRequest) -> Behaviour:
    """Refuses a second credential, DELETE, and a body asking to delete; allows the rest."""
    if not request.path.startswith("/v1/data/"):
        return Behaviour()  # OPA's health, which the sidecar probes
    document = request.json()["input"]
    http = document["attributes"]["request"]["http"]
    credentials = [name for name in CREDENTIALS if name in http.get("headers", {})]
    body = document.get("parsed_body")
    refused = (
        len(credentials) > 1
        or http["method"] == "DELETE"
        or (isinstance(body, dict) and body.get("action") in ("delete", ["delete"]))
    )
    return Behaviour.json({"result": {"allowed": not refused}})


def _h1(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""
) -> Callable[[int], Reply]:
    lines = [f"{method} {target} HTTP/1.1", "host: shop.example", *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append(f"content-length: {len(body)}")
    return lambda port: h1_request(port, "\r\n".join(lines).encode(), [body] if body else [])


JSON = [("content-type", "application/json")]
FORM = [("content-type", "application/x-www-form-urlencoded")]
REQUESTS: dict[str, Callable[[int], Reply]] = {
    "get-with-query": _h1("GET", "/catalog/items?page=2&sort=price", []),
    "get-encoded-query": _h1("GET", "/search?q=caf%C3%A9+cr%C3%A8me&lang=fr", [("accept", "text/html")]),
    "repeated-headers": _h1(
        "GET", "/r", [("x-tag", "a"), ("x-tag", "b"), ("accept", "a/b"), ("accept", "c/d")]
    ),
    "one-credential": _h1("GET", "/me", [("authorization", "Bearer token-1")]),
    "second-credential-cookie": _h1("GET", "/me", [("authorization", "Bearer t"), ("cookie", "session=s1")]),
    "second-credential-proxy": _h1(
        "GET", "/me", [("authorization", "Bearer t"), ("proxy-authorization", "Basic x")]
    ),
    "second-credential-api-key": _h1("GET", "/me", [("authorization", "Bearer t"), ("x-api-key", "k-9")]),
    "two-cookie-lines": _h1("GET", "/c", [("cookie", "a=1"), ("cookie", "b=2")]),
    "post-json": _h1("POST", "/orders?dry_run=0", JSON, b'{"item": "book", "quantity": 3}'),
    "post-json-delete": _h1("POST", "/orders", JSON, b'{"item": "book", "action": "delete"}'),
    "put-json": _h1("PUT", "/orders/7", JSON, b'{"quantity": 4}'),
    "post-form": _h1("POST", "/login", FORM, b"user=alice&remember=1"),
    "post-form-delete": _h1("POST", "/admin", FORM, b"action=delete&id=7"),
    # Envoy answers one 100-continue itself; any other Expect reaches the check and the upstream.
    "repeated-expect": _h1(
        "POST", "/upload", [*JSON, ("expect", "100-continue"), ("expect", "100-continue")], b"{}"
    ),
    "unknown-expect": _h1("PUT", "/upload", [*JSON, ("expect", "later")], b"{}"),
    # The client's x-envoy-* headers are dropped: the partial-body flag the policy sees is Envoy's.
    "client-envoy-headers": _h1(
        "POST",
        "/orders",
        [*JSON, ("x-envoy-auth-partial-body", "true"), ("x-envoy-peer-metadata-id", "forged")],
        b'{"item": "pen"}',
    ),
    "patch-text": _h1("PATCH", "/notes/1?v=3", [("content-type", "text/plain")], b"hello"),
    "delete": _h1("DELETE", "/orders/7", [("authorization", "Bearer t")]),
    "head": _h1("HEAD", "/catalog", []),
}


@pytest.fixture(scope="module")
def both_modes(_fault_opa_session: FaultOpa) -> Iterator[dict[str, Stack]]:
    with (
        running_mode_stack("grpc", _fault_opa_session.url) as grpc,
        running_mode_stack("http", _fault_opa_session.url) as http,
    ):
        yield {"grpc": grpc, "http": http}


def _pop(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    """Remove the field at `path`; what it held, or None if it was absent."""
    node = document
    for key in path[:-1]:
        node = node.get(key, {})
    return node.pop(path[-1], None)


@pytest.fixture(scope="module")
def seen(both_modes: dict[str, Stack], _fault_opa_session: FaultOpa) -> dict[str, dict[str, Seen]]:
    """Every request through both modes: {name: {mode: what was seen}}."""
    fault = _fault_opa_session
    fault.reset()
    fault.set(policy)
    try:
        return {
            name: {mode: send(stack, fault, request) for mode, stack in both_modes.items()}
            for name, request in REQUESTS.items()
        }
    finally:
        fault.reset()


@pytest.mark.parametrize("name", REQUESTS)
def test_both_modes_decide_alike_on_the_same_input(seen: dict[str, dict[str, Seen]], name: str) -> None:
    grpc, http = seen[name]["grpc"], seen[name]["http"]
    assert grpc.reply.status == http.reply.status
    assert (grpc.upstream is None) == (http.upstream is None)
    grpc_input, http_input = copy.deepcopy(grpc.input), copy.deepcopy(http.input)
    for one, document in ((grpc, grpc_input), (http, http_input)):
        assert _pop(document, TIME) is not None
        request_id = _pop(document, REQUEST_ID)
        if one.upstream is not None:
            assert one.upstream["headers"]["x-request-id"] == [request_id]
    for path in GRPC_ONLY_FIELDS:
        _pop(grpc_input, path)
        assert _pop(http_input, path) is None, path
    assert http_input == grpc_input


def test_every_field_listed_as_grpc_only_is_one_grpc_mode_carries(seen: dict[str, dict[str, Seen]]) -> None:
    for path in GRPC_ONLY_FIELDS:
        carried = [
            name for name in REQUESTS if _pop(copy.deepcopy(seen[name]["grpc"].input), path) is not None
        ]
        assert carried, f"no request gave the policy {'.'.join(path)} in gRPC mode"


def test_the_policy_saw_every_credential_in_both_modes(seen: dict[str, dict[str, Seen]]) -> None:
    for name in ("second-credential-cookie", "second-credential-proxy", "second-credential-api-key"):
        for mode in ("grpc", "http"):
            assert seen[name][mode].reply.status == 403, (name, mode)
    assert seen["one-credential"]["http"].reply.status == 200


def test_headers_that_concern_envoy_reach_the_policy_as_the_upstream_gets_them(
    seen: dict[str, dict[str, Seen]],
) -> None:
    for mode in ("grpc", "http"):
        for name, expect in (("repeated-expect", "100-continue,100-continue"), ("unknown-expect", "later")):
            one = seen[name][mode]
            assert one.reply.status == 200 and one.upstream is not None, (name, mode, one.reply)
            assert one.headers["expect"] == expect
            assert ",".join(one.upstream["headers"]["expect"]) == expect
        forged = seen["client-envoy-headers"][mode]
        assert forged.reply.status == 200 and forged.upstream is not None, (mode, forged.reply)
        assert forged.headers["x-envoy-auth-partial-body"] == "false"  # Envoy's, not the client's
        assert forged.input["truncated_body"] is False
        assert "x-envoy-peer-metadata-id" not in forged.headers
        assert (
            not {"x-envoy-auth-partial-body", "x-envoy-peer-metadata-id"} & forged.upstream["headers"].keys()
        )
