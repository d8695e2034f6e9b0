"""A client forging its address, its scheme, its forwarding chain and Envoy's own x-envoy-*
headers, through the shipped configurations of both modes (gRPC mode over HTTP/1.1 and
HTTP/2 with prior knowledge; the HTTP-mode listener takes HTTP/1.1 only): the policy and
the upstream see the same values, and they are the connection's or Envoy's."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e.envoy_wire import Reply, h1_request, h2_request
from tests.e2e.stack import Stack
from tests.e2e.two_modes import MODE_PROTOCOLS, MODES, PROTOCOLS, running_mode_stack, send
from tests.fault_opa import FaultOpa

CLIENT_ADDRESS = "127.0.0.1"  # the tests connect over loopback
FORGED = (
    (b"x-forwarded-for", b"203.0.113.9, 198.51.100.7"),
    (b"x-forwarded-proto", b"https"),
    (b"x-envoy-external-address", b"203.0.113.9"),
    (b"x-envoy-internal", b"true"),
)
# Forwarding claims Envoy never writes itself: dropped, so neither side reads the client's.
DROPPED = (
    (b"x-forwarded-host", b"admin.internal"),
    (b"x-forwarded-port", b"443"),
    (b"x-forwarded-prefix", b"/admin"),
    (b"x-real-ip", b"203.0.113.9"),
    (b"forwarded", b"for=203.0.113.9;proto=https;host=admin.internal"),
)


def _h1(target: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Callable[[int], Reply]:
    lines = [b"GET %s HTTP/1.1" % target, b"host: shop.example"]
    lines += [b"%s: %s" % pair for pair in (*FORGED, *DROPPED, *extra)]
    return lambda port: h1_request(port, b"\r\n".join(lines))


def _h2(scheme: bytes) -> Callable[[int], Reply]:
    pseudo = [(b":method", b"GET"), (b":scheme", scheme), (b":authority", b"shop.example"), (b":path", b"/f")]
    return lambda port: h2_request(port, [*pseudo, *FORGED, *DROPPED])


CLIENTS = {
    "http1": _h1(b"/f"),
    "http1-mixed-case-names": _h1(
        b"/f", ((b"X-Forwarded-For", b"203.0.113.10"), (b"X-Forwarded-Proto", b"https"))
    ),
    "http1-absolute-http-target": _h1(b"http://shop.example/f"),
    "http2-scheme-https": _h2(b"https"),
    "http2-scheme-other": _h2(b"ftp"),
}


# Each client through each mode whose listener takes its protocol.
MODE_CLIENTS = [
    (mode, client) for mode in MODES for client in CLIENTS if client.split("-")[0] in PROTOCOLS[mode]
]


@pytest.fixture(scope="module", params=MODES)
def mode_stack(request: pytest.FixtureRequest, _fault_opa_session: FaultOpa) -> Iterator[Stack]:
    with running_mode_stack(request.param, _fault_opa_session.url) as stack:
        yield stack


@pytest.mark.parametrize(("mode_stack", "client"), MODE_CLIENTS, indirect=["mode_stack"])
def test_forwarding_facts_come_from_the_connection(
    mode_stack: Stack, fault_opa: FaultOpa, client: str
) -> None:
    seen = send(mode_stack, fault_opa, CLIENTS[client])
    assert seen.reply.status == 200, seen.reply
    assert seen.upstream is not None
    upstream = seen.upstream["headers"]

    policy_facts = {
        "scheme": seen.http["scheme"],
        ":scheme": seen.headers[":scheme"],
        "x-forwarded-proto": seen.headers["x-forwarded-proto"],
        "x-forwarded-for": seen.headers["x-forwarded-for"],
        "x-envoy-external-address": seen.headers["x-envoy-external-address"],
    }
    assert policy_facts == {
        "scheme": "http",
        ":scheme": "http",
        "x-forwarded-proto": "http",
        "x-forwarded-for": CLIENT_ADDRESS,
        "x-envoy-external-address": CLIENT_ADDRESS,
    }
    # The application reads the same facts, once each.
    for name in ("x-forwarded-proto", "x-forwarded-for", "x-envoy-external-address"):
        assert upstream[name] == [policy_facts[name]], name
    # Envoy treats the client as external: its x-envoy-* claims are dropped, and so are
    # the forwarding claims Envoy would otherwise pass on as sent.
    for name in ("x-envoy-internal", *(name.decode() for name, _ in DROPPED)):
        assert name not in seen.headers and name not in upstream, name
    if "source" in seen.input["attributes"]:  # gRPC mode; HTTP mode does not carry it
        assert seen.input["attributes"]["source"]["address"]["socketAddress"]["address"] == CLIENT_ADDRESS


def test_an_https_target_on_the_cleartext_listener_never_reaches_a_check(
    mode_stack: Stack, fault_opa: FaultOpa
) -> None:
    received = len(mode_stack.upstream.received)
    reply = _h1(b"https://shop.example/f")(mode_stack.envoy.port)
    assert reply.status == 403  # Envoy's own refusal (http1.https_url_on_plaintext_connection)
    assert fault_opa.count == 0
    assert len(mode_stack.upstream.received) == received


# Headers only Envoy writes. Envoy 1.40 drops some client copies itself (x-envoy-internal,
# -original-path, -expected-rq-timeout-ms, the retry ones); the others passed to the upstream
# and the check as the client wrote them until the early header mutation removed every
# x-envoy-* header of the client.
CLIENT_ENVOY_HEADERS = (
    (b"x-envoy-auth-partial-body", b"false"),
    (b"x-envoy-auth-partial-body", b"false"),
    (b"x-envoy-auth-failure-mode-allowed", b"true"),
    (b"x-envoy-auth-headers-to-remove", b"authorization"),
    (b"x-envoy-original-path", b"/public/f"),
    (b"x-envoy-original-dst-host", b"10.0.0.1:80"),
    (b"x-envoy-peer-metadata-id", b"sidecar~10.0.0.1~admin.internal"),
    (b"x-envoy-expected-rq-timeout-ms", b"999999"),
    (b"x-envoy-internal", b"true"),
    (b"x-envoy-anything", b"client"),
)
# What Envoy itself writes on these requests, with its own values.
ENVOY_WRITES = {"x-envoy-external-address", "x-envoy-expected-rq-timeout-ms", "x-envoy-auth-partial-body"}
BODY = b'{"a": 1}'


def _with_envoy_headers(protocol: str, body: bytes) -> Callable[[int], Reply]:
    framing = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))] if body else []
    if protocol == "http1":
        lines = [b"POST /e HTTP/1.1", b"host: shop.example"]
        lines += [b"%s: %s" % pair for pair in (*framing, *CLIENT_ENVOY_HEADERS)]
        return lambda port: h1_request(port, b"\r\n".join(lines), [body] if body else [])
    pseudo = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"shop.example"),
        (b":path", b"/e"),
    ]
    return lambda port: h2_request(port, [*pseudo, *framing, *CLIENT_ENVOY_HEADERS], [body] if body else [])


@pytest.mark.parametrize("body", [BODY, b""], ids=["body", "no-body"])
@pytest.mark.parametrize(("mode_stack", "protocol"), MODE_PROTOCOLS, indirect=["mode_stack"])
def test_no_x_envoy_header_of_the_client_reaches_the_policy_or_the_upstream(
    mode_stack: Stack, fault_opa: FaultOpa, protocol: str, body: bytes
) -> None:
    seen = send(mode_stack, fault_opa, _with_envoy_headers(protocol, body))
    assert seen.reply.status == 200, seen.reply
    assert seen.upstream is not None
    upstream = seen.upstream["headers"]
    policy_envoy = {name for name in seen.headers if name.startswith("x-envoy-")}
    upstream_envoy = {name for name in upstream if name.startswith("x-envoy-")}
    assert policy_envoy <= ENVOY_WRITES and upstream_envoy <= ENVOY_WRITES, (policy_envoy, upstream_envoy)
    # The body flag is Envoy's, on the check only: "false" for a whole body, none without one.
    assert seen.headers.get("x-envoy-auth-partial-body") == ("false" if body else None)
    assert "x-envoy-auth-partial-body" not in upstream
    assert upstream["x-envoy-expected-rq-timeout-ms"] == ["15000"]  # the route's timeout, not the client's
    assert upstream["x-envoy-external-address"] == [CLIENT_ADDRESS]
    assert seen.input["truncated_body"] is False
