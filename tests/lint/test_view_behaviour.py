"""The request-view rules' claims, checked on the installed Envoy: each listener
of fixtures/envoy/request-view.yaml that the linter flags lets the policy see
something other than what the upstream gets, and the control listener does not.
The check servers allow everything and keep what they received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from sidecar._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from tests.lint.helpers import FIXTURES, lint
from tests.lint.test_envoy_behaviour import running_envoy
from tests.lint.view_probe import Received, RecordingAuthorization, RecordingHttp, chunk, http1, http2

FIXTURE = FIXTURES / "envoy/request-view.yaml"
FORGED = {
    "x-forwarded-for": "6.6.6.6",
    "x-forwarded-proto": "https",
    "forwarded": "for=6.6.6.6",
    "x-real-ip": "6.6.6.6",
}


@dataclass
class Stack:
    ports: dict[str, int]
    authz: RecordingAuthorization
    http_checks: RecordingHttp
    upstream: RecordingHttp

    async def send(self, send: Callable[[], int]) -> tuple[dict[str, Any], Received]:
        """Run one request; (what the check got, what the upstream got)."""
        self.authz.checks.clear()
        self.http_checks.received.clear()
        self.upstream.received.clear()
        assert await asyncio.to_thread(send) == 200
        (upstream,) = self.upstream.received
        if self.http_checks.received:
            (check,) = self.http_checks.received
            return {"headers": check.headers, "body": check.body}, upstream
        (grpc_check,) = self.authz.checks
        http = grpc_check.attributes.request.http
        return {
            "headers": dict(http.headers),
            "body": http.body,
            "raw_body": http.raw_body,
            "scheme": http.scheme,
            "source": grpc_check.attributes.source.address.socket_address.address,
        }, upstream


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    authz = RecordingAuthorization()
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(authz, server)  # type: ignore[no-untyped-call]
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http_checks, upstream = RecordingHttp(), RecordingHttp()
    text = (
        FIXTURE.read_text()
        .replace("port_value: 9191", f"port_value: {grpc_port}")
        .replace("port_value: 9192", f"port_value: {http_checks.port}")
        .replace("port_value: 8080", f"port_value: {upstream.port}")
    )
    try:
        async with running_envoy(text, tmp_path) as ports:
            yield Stack(ports, authz, http_checks, upstream)
    finally:
        http_checks.stop()
        upstream.stop()
        await server.stop(None)


@asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield


def flagged() -> dict[str, set[str]]:
    """Listener name -> rules the linter reports on it. Every listener here leaves
    the path as written (test_reading_behaviour.py proves that rule): checked
    once, then left out."""
    names = [entry["name"] for entry in yaml.safe_load(FIXTURE.read_text())["static_resources"]["listeners"]]
    found: dict[str, set[str]] = {name: set() for name in names}
    raw_paths = set()
    for finding in lint(FIXTURE).findings:
        name = names[int(finding.path.split("/")[3])]
        if finding.rule == "path-not-normalized":
            raw_paths.add(name)
        else:
            found[name].add(finding.rule)
    assert raw_paths == set(names)
    return found


def test_the_fixture_flags_what_the_live_tests_show() -> None:
    assert flagged() == {
        "string_body": {"body-as-string"},
        "small_limit": {
            "partial-body-limit-mismatch",
            "partial-body",
            "body-not-forwarded",
            "body-as-string",
        },
        "client_facts": {"forwarded-facts-from-client"},
        "appended": {"forwarded-facts-from-client"},
        "trusted_hops": {"xff-trusted-hops", "forwarded-facts-from-client"},
        "trusted": set(),
        "forwarding_kept": {"client-forwarding-headers"},
        "http_some_headers": {"credential-headers-not-sent"},
        "http_all_headers": set(),
        "grpc_some_headers": {"credential-headers-not-sent"},
    }


def post(port: int, body: bytes, path: str = "/", extra: str = "") -> Callable[[], int]:
    head = f"POST {path} HTTP/1.1\r\nHost: app\r\nContent-Length: {len(body)}{extra}"
    return lambda: http1(port, head, (body,))


def chunked(port: int, pieces: tuple[bytes, ...], path: str = "/") -> Callable[[], int]:
    head = f"POST {path} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked"
    return lambda: http1(port, head, (*map(chunk, pieces), b"0\r\n\r\n"), pause=0.2)


def get(port: int, headers: dict[str, str]) -> Callable[[], int]:
    head = "GET / HTTP/1.1\r\nHost: app" + "".join(f"\r\n{name}: {value}" for name, value in headers.items())
    return lambda: http1(port, head)


def get2(port: int, headers: dict[str, str], scheme: str = "https") -> Callable[[], int]:
    pseudo = [(":method", "GET"), (":scheme", scheme), (":authority", "app"), (":path", "/")]
    return lambda: http2(port, pseudo + list(headers.items()))


async def test_a_body_as_a_string_is_not_the_body_the_upstream_gets(stack: Stack) -> None:
    check, upstream = await stack.send(post(stack.ports["string_body"], b"a\xffb"))
    assert upstream.body == b"a\xffb"
    assert (check["body"], check["raw_body"]) == ("a!b", b"")  # Envoy wrote '!' for the byte
    check, upstream = await stack.send(post(stack.ports["trusted"], b"a\xffb"))  # pack_as_bytes
    assert (check["body"], check["raw_body"], upstream.body) == ("", b"a\xffb", b"a\xffb")


async def test_a_body_cut_exactly_at_the_limit_is_marked_complete(stack: Stack) -> None:
    port = stack.ports["small_limit"]  # max_request_bytes 16, allow_partial_message
    check, upstream = await stack.send(chunked(port, (b"x" * 16, b"y")))
    assert upstream.body == b"x" * 16 + b"y"
    assert check["raw_body"] == b"x" * 16
    assert check["headers"]["x-envoy-auth-partial-body"] == "false"  # Envoy says: complete
    assert "content-length" not in check["headers"] and "transfer-encoding" not in check["headers"]
    # The same 17 bytes in one piece: marked as cut.
    check, _ = await stack.send(chunked(port, (b"x" * 16 + b"y",)))
    assert (check["raw_body"], check["headers"]["x-envoy-auth-partial-body"]) == (b"x" * 16, "true")


async def test_a_route_without_body_buffering_leaves_no_trace_of_a_chunked_body(stack: Stack) -> None:
    check, upstream = await stack.send(
        chunked(stack.ports["small_limit"], (b"action=delete",), "/unbuffered")
    )
    assert upstream.body == b"action=delete"
    assert (check["body"], check["raw_body"]) == ("", b"")
    assert not {"content-length", "transfer-encoding", "x-envoy-auth-partial-body"} & set(check["headers"])


async def test_with_envoys_defaults_the_client_writes_the_forwarded_facts(stack: Stack) -> None:
    port = stack.ports["client_facts"]
    check, upstream = await stack.send(get(port, FORGED))
    assert (check["headers"]["x-forwarded-for"], check["headers"]["x-forwarded-proto"]) == (
        "6.6.6.6",
        "https",
    )
    assert check["scheme"] == "https"  # over plain text: HTTP/1.1 takes it from x-forwarded-proto
    assert upstream.headers["x-forwarded-for"] == "6.6.6.6"
    assert check["source"] == "127.0.0.1"  # the source address is the connection's all the same
    check, _ = await stack.send(get2(port, FORGED))
    assert (check["scheme"], check["headers"]["x-forwarded-for"]) == ("https", "6.6.6.6")


async def test_use_remote_address_alone_keeps_the_clients_entries_in_front(stack: Stack) -> None:
    check, _ = await stack.send(get(stack.ports["appended"], FORGED))
    assert check["headers"]["x-forwarded-for"].startswith("6.6.6.6,")
    assert check["headers"]["x-forwarded-proto"] == "http"


async def test_a_trusted_hop_takes_the_clients_address(stack: Stack) -> None:
    check, upstream = await stack.send(get(stack.ports["trusted_hops"], FORGED))
    assert check["headers"]["x-forwarded-for"].startswith("6.6.6.6,")
    # the forged address is taken as the client's; scheme_to_overwrite rewrote x-forwarded-proto
    assert (
        check["headers"]["x-envoy-external-address"]
        == upstream.headers["x-envoy-external-address"]
        == "6.6.6.6"
    )
    assert check["headers"]["x-forwarded-proto"] == "http"


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/2"])
async def test_the_trusted_listener_takes_every_forwarded_fact_from_the_connection(
    stack: Stack, version: str
) -> None:
    port = stack.ports["trusted"]
    send = get(port, FORGED) if version == "HTTP/1.1" else get2(port, FORGED, scheme="https")
    check, upstream = await stack.send(send)
    assert check["scheme"] == "http"
    assert check["headers"]["x-forwarded-proto"] == "http"
    assert "6.6.6.6" not in check["headers"]["x-forwarded-for"]
    assert not {"forwarded", "x-real-ip"} & set(check["headers"])
    assert upstream.headers["x-forwarded-for"] == check["headers"]["x-forwarded-for"]


async def test_forwarding_headers_envoy_never_writes_reach_the_policy(stack: Stack) -> None:
    check, upstream = await stack.send(get(stack.ports["forwarding_kept"], FORGED))
    assert check["headers"]["x-forwarded-for"] == "127.0.0.1"  # overwritten early from the connection
    assert (check["headers"]["forwarded"], check["headers"]["x-real-ip"]) == ("for=6.6.6.6", "6.6.6.6")
    assert upstream.headers["x-real-ip"] == "6.6.6.6"


CREDENTIALS = {
    "cookie": "session=abc",
    "x-api-key": "k1",
    "proxy-authorization": "Basic eDp5",
    "x-other": "1",
}


@pytest.mark.parametrize(
    ("listener", "seen"),
    [
        (
            "http_some_headers",
            {"x-other"},
        ),  # no cookie or proxy-authorization in the list; x-api-key disallowed
        ("grpc_some_headers", set()),
        ("http_all_headers", set(CREDENTIALS)),
    ],
)
async def test_credential_headers_left_out_of_the_check_reach_the_upstream(
    stack: Stack, listener: str, seen: set[str]
) -> None:
    check, upstream = await stack.send(get(stack.ports[listener], CREDENTIALS))
    assert set(CREDENTIALS) <= set(upstream.headers)
    assert set(CREDENTIALS) & set(check["headers"]) == seen
