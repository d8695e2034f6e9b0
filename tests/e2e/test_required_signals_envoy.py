"""`--require` through real Envoy (the shipped configuration), over HTTP/1.1 and HTTP/2.

What Envoy makes of a header that carries nothing differs by protocol: HTTP/1.1 trims a
value of spaces and tabs to "", HTTP/2 passes it as sent, and both join repeated headers
with "," (two empty ones arrive as ","). Each such request is denied (`missing_signal`)
without asking OPA; a value with any content passes. A value the application could read
otherwise (space at an end, which HTTP/2 keeps; bytes beyond ASCII) is refused before the
guard runs (`bad_request`), OPA not asked either. The gRPC-mode listener's default codec
takes HTTP/2 with prior knowledge (h2c), which the raw `h2` client below speaks; the
HTTP-mode listener takes HTTP/1.1 only.

In ext_authz HTTP mode Envoy forwards headers only: a guard on a fact of the connection
(`--require-tls-peer`) denies every check, whatever headers the client forges.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import local_addresses, start_envoy, start_sidecar
from deploy.render import ENVOY_HTTP_TEMPLATE, render_envoy
from tests.e2e.stack import Stack, running_stack, wait_for
from tests.fault_opa import FaultOpa

TENANT = "/attributes/request/http/headers/x-tenant"
REFUSED = "<refused as ambiguous>"


def h1_status(port: int, path: str, header_lines: Sequence[bytes]) -> int:
    """GET over a raw HTTP/1.1 socket, so repeated and blank headers go out as written."""
    head = f"GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n".encode()
    head += b"".join(line + b"\r\n" for line in header_lines) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def h2_status(port: int, path: str, headers: Sequence[tuple[bytes, bytes]]) -> int:
    """GET over HTTP/2 with prior knowledge; header values are sent unvalidated, as written."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    pseudo = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"localhost"),
        (b":path", path.encode()),
    ]
    conn.send_headers(stream, [*pseudo, *headers], end_stream=True)
    status: int | None = None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and status is not None:
                    return status
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise AssertionError(f"Envoy ended the stream without an answer: {event}")
            sock.sendall(conn.data_to_send())
    raise AssertionError("Envoy closed the connection without an answer")


@pytest.fixture(scope="module")
def guarded_stack(_fault_opa_session: FaultOpa) -> Iterator[Stack]:
    """Fail-closed Envoy -> sidecar requiring x-tenant (inputs logged) -> an allow-all OPA."""
    args = ("--require", TENANT, "--log-input")
    with running_stack(_fault_opa_session.url, sidecar_args=args) as stack:
        yield stack


def _outcome(stack: Stack, fault_opa: FaultOpa, path: str, status: int) -> tuple[str, Any]:
    """(outcome, the x-tenant value the guard saw), checked against what each side did."""
    decision = stack.decision(path)
    reached = [r for r in stack.upstream.received if r["path"] == path]
    asked = [r for r in fault_opa.requests if r.method == "POST"]
    if decision.get("reason") == "bad_request":
        # A value the application may read differently (space at an end, bytes beyond
        # ASCII) is refused before any guard: still no request reaches OPA or the app.
        assert "printable ASCII, or space at an end" in decision["detail"]
        assert (status, reached, asked) == (400, [], [])
        return decision["outcome"], REFUSED
    seen = decision["input"]["attributes"]["request"]["http"]["headers"].get("x-tenant")
    if decision["outcome"] == "allow":
        assert (status, len(reached), len(asked)) == (200, 1, 1)
    else:
        assert decision["reason"] == "missing_signal"
        assert decision["detail"] == f"required signal {TENANT} is missing or carries nothing"
        assert (status, reached, asked) == (403, [], [])  # refused before OPA was asked
    return decision["outcome"], seen


# (name, HTTP/1.1 header lines, HTTP/2 headers, the value Envoy hands the guard over 1.1 and 2)
CASES = [
    ("value", [b"x-tenant: t"], [(b"x-tenant", b"t")], ("t", "t"), "allow"),
    ("absent", [], [], (None, None), "deny"),
    ("empty", [b"x-tenant:"], [(b"x-tenant", b"")], ("", ""), "deny"),
    ("spaces", [b"x-tenant:    "], [(b"x-tenant", b"   ")], ("", REFUSED), "deny"),
    ("tabs", [b"x-tenant:\t \t"], [(b"x-tenant", b"\t \t")], ("", REFUSED), "deny"),
    ("two-empty", [b"x-tenant:", b"x-tenant:"], [(b"x-tenant", b"")] * 2, (",", ","), "deny"),
    ("comma", [b"x-tenant: ,"], [(b"x-tenant", b",")], (",", ","), "deny"),
    ("commas-and-spaces", [b"x-tenant: , ,"], [(b"x-tenant", b" , , ")], (", ,", REFUSED), "deny"),
    ("no-break-space", [b"x-tenant: \xc2\xa0"], [(b"x-tenant", b"\xc2\xa0")], (REFUSED, REFUSED), "deny"),
    (
        "value-and-empty",
        [b"x-tenant: a", b"x-tenant:"],
        [(b"x-tenant", b"a"), (b"x-tenant", b"")],
        ("a,", "a,"),
        "allow",
    ),
]


@pytest.mark.parametrize(
    ("name", "h1_lines", "h2_headers", "seen", "outcome"), CASES, ids=[c[0] for c in CASES]
)
def test_a_header_that_carries_nothing_is_missing_over_http1_and_http2(
    guarded_stack: Stack,
    fault_opa: FaultOpa,
    name: str,
    h1_lines: list[bytes],
    h2_headers: list[tuple[bytes, bytes]],
    seen: tuple[str | None, str | None],
    outcome: str,
) -> None:
    port = guarded_stack.envoy.port
    h1_path, h2_path = f"/h1/{name}", f"/h2/{name}"
    status = h1_status(port, h1_path, h1_lines)
    assert _outcome(guarded_stack, fault_opa, h1_path, status) == (outcome, seen[0])
    fault_opa.reset()
    status = h2_status(port, h2_path, h2_headers)
    assert _outcome(guarded_stack, fault_opa, h2_path, status) == (outcome, seen[1])
    counters = guarded_stack.authz_counters()
    assert (counters["error"], counters["failure_mode_allowed"]) == (0, 0)


@contextlib.contextmanager
def http_mode_stack(opa_url: str, sidecar_args: Sequence[str]) -> Iterator[Stack]:
    """The shipped HTTP-mode Envoy -> sidecar (HTTP listener on TCP) -> OPA."""
    workdir = Path(tempfile.mkdtemp(prefix="e2e-req-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        upstream = cleanup.enter_context(EchoUpstream())
        sidecar = start_sidecar(opa_url, workdir, http_addr="127.0.0.1:0", extra_args=sidecar_args)
        cleanup.callback(sidecar.stop)
        config = render_envoy(local_addresses(upstream.addr, sidecar.http_addr), ENVOY_HTTP_TEMPLATE)
        envoy = start_envoy(config, workdir)
        cleanup.callback(envoy.stop)
        yield Stack(upstream, sidecar, envoy, workdir)


def test_http_mode_never_meets_a_tls_peer_guard(fault_opa: FaultOpa) -> None:
    """Headers that imitate a verified client certificate do not stand in for one."""
    forged = {
        "x-forwarded-client-cert": "By=spiffe://example.org/envoy;URI=spiffe://example.org/ns/a/sa/b",
        "x-ssl-client-verify": "SUCCESS",
        "x-tenant": "t",
    }
    with http_mode_stack(fault_opa.url, ["--require-tls-peer"]) as stack:
        response = stack.envoy.request("GET", "/orders", headers=forged)
        decision = wait_for(lambda: next(iter(stack.sidecar.decisions()), None))
        assert response.status == 403
        assert stack.upstream.received == []
    assert decision["reason"] == "missing_signal"
    assert decision["detail"].startswith(
        "required signal /attributes/source/principal can only come from Envoy's gRPC check"
    )
    assert "HTTP mode" in decision["detail"]
    assert [r for r in fault_opa.requests if r.method == "POST"] == []
