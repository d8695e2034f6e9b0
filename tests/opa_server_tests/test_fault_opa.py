"""Each control of the fault-injecting OPA does what it says on the wire."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time

import pytest

from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.fixtures.opa import Reply, connect, send

REQUEST = b'POST /v1/data/envoy/authz/allow HTTP/1.1\r\nHost: opa\r\nContent-Length: 12\r\n\r\n{"input":{}}'


def ask(fault: FaultOpa, body: bytes = b'{"input":{}}', path: str = "/v1/data/envoy/authz/allow") -> Reply:
    conn = connect(fault.url, timeout=5)
    try:
        return send(conn, "POST", path, body, {"Content-Type": "application/json"})
    finally:
        conn.close()


def raw_socket(fault: FaultOpa) -> socket.socket:
    host, port = fault.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_default_answer_and_keep_alive(fault_opa: FaultOpa) -> None:
    conn = connect(fault_opa.url)
    try:
        first = send(conn, "POST", "/v1/data/a", b'{"input":1}')
        second = send(conn, "POST", "/v1/data/b", b'{"input":2}')
    finally:
        conn.close()
    for reply in (first, second):
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"result": True}
    assert fault_opa.count == 2
    assert fault_opa.connections == 1
    assert [r.connection for r in fault_opa.requests] == [1, 1]


def test_status_body_and_content_type(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.answer(503, b"overloaded", "text/plain", headers=(("X-Extra", "1"),)))
    reply = ask(fault_opa)
    assert (reply.status, reply.body) == (503, b"overloaded")
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.headers["X-Extra"] == "1"
    fault_opa.set(Behaviour.json({"result": {"allowed": "yes"}}))
    assert ask(fault_opa).json() == {"result": {"allowed": "yes"}}
    fault_opa.set(Behaviour.wrong_content_type())
    assert ask(fault_opa).headers["Content-Type"] == "text/html"


def test_duplicate_key_json_is_just_a_body(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.answer(body=b'{"result":true,"result":false}'))
    assert ask(fault_opa).body == b'{"result":true,"result":false}'


def test_requests_are_recorded_and_reset(fault_opa: FaultOpa) -> None:
    conn = connect(fault_opa.url)
    try:
        send(
            conn,
            "POST",
            "/v1/data/x/y?strict-builtin-errors=true&a=",
            b'{"input":{"k":"v"}}',
            {"X-Trace": "t1"},
        )
        conn.putrequest("POST", "/v1/data/chunked")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b'4\r\n{"in\r\n6\r\nput":1\r\n1\r\n}\r\n0\r\n\r\n')
        conn.getresponse().read()
    finally:
        conn.close()
    assert fault_opa.wait_for_count(2, timeout=1)
    first, second = fault_opa.requests
    assert (first.method, first.path, first.query) == (
        "POST",
        "/v1/data/x/y",
        "strict-builtin-errors=true&a=",
    )
    assert first.params == {"strict-builtin-errors": ["true"], "a": [""]}
    assert first.header("x-trace") == "t1"
    assert first.json() == {"input": {"k": "v"}}
    assert second.body == b'{"input":1}'
    fault_opa.reset()
    assert (fault_opa.count, fault_opa.requests, fault_opa.connections) == (0, [], 0)
    assert ask(fault_opa).json() == {"result": True}
    assert fault_opa.count == 1


def test_behaviour_chosen_per_request(fault_opa: FaultOpa) -> None:
    def choose(request: RecordedRequest) -> Behaviour:
        user = request.json()["input"]["user"]
        return Behaviour.json({"result": user == "admin"}) if user != "boom" else Behaviour.answer(500)

    fault_opa.set(choose)
    assert ask(fault_opa, b'{"input":{"user":"admin"}}').json() == {"result": True}
    assert ask(fault_opa, b'{"input":{"user":"bob"}}').json() == {"result": False}
    assert ask(fault_opa, b'{"input":{"user":"boom"}}').status == 500
    assert fault_opa.errors == []


def test_failing_behaviour_callable_answers_500_and_is_reported(fault_opa: FaultOpa) -> None:
    fault_opa.set(lambda request: Behaviour.answer(int(request.json()["input"])))
    assert ask(fault_opa, b"not json").status == 500
    assert len(fault_opa.errors) == 1


def test_delay_before_headers(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.delayed(0.3, Behaviour.answer(201)))
    started = time.monotonic()
    reply = ask(fault_opa)
    elapsed = time.monotonic() - started
    assert reply.status == 201
    assert 0.3 <= elapsed < 2


def test_stall_mid_body(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.stalled(0.3, at=5))
    with raw_socket(fault_opa) as sock:
        started = time.monotonic()
        sock.sendall(REQUEST)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        first_part = time.monotonic() - started
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < len(b'{"result":true}\n'):
            body += sock.recv(65536)
        total = time.monotonic() - started
    assert body == b'{"result":true}\n'
    assert first_part < 0.25
    assert total >= 0.3


@pytest.mark.parametrize("status", [301, 302, 307])
def test_redirect(fault_opa: FaultOpa, status: int) -> None:
    fault_opa.set(Behaviour.redirect("http://elsewhere.invalid/v1/data/x", status))
    reply = ask(fault_opa)
    assert reply.status == status
    assert reply.headers["Location"] == "http://elsewhere.invalid/v1/data/x"
    assert reply.body == b""


def test_close_before_responding(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.close_early())
    with pytest.raises(http.client.RemoteDisconnected):
        ask(fault_opa)
    assert fault_opa.count == 1


def test_reset_mid_body(fault_opa: FaultOpa) -> None:
    body = b'{"result":true,"padding":"xxxxxxxxxxxx"}'
    fault_opa.set(Behaviour.reset_mid_body(body=body))
    received = b""
    with raw_socket(fault_opa) as sock, pytest.raises(ConnectionResetError):
        sock.sendall(REQUEST)
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n" + body[: len(body) // 2])  # half of the body, then RST


def test_truncated_chunked_body(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.truncated_chunked())
    with raw_socket(fault_opa) as sock:
        sock.sendall(REQUEST)
        received = read_all(sock)
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    assert body == b'8\r\n{"result\r\n'  # one chunk with half the body, no terminating chunk
    with pytest.raises(http.client.IncompleteRead):
        ask(fault_opa)


@pytest.mark.parametrize("chunked", [False, True])
def test_huge_body_is_streamed_valid_json(fault_opa: FaultOpa, chunked: bool) -> None:
    size = 3 * 1024 * 1024 + 7
    fault_opa.set(Behaviour.huge(size, chunked=chunked))
    reply = ask(fault_opa)
    assert len(reply.body) == size
    assert json.loads(reply.body)["result"] is True
    assert ("Content-Length" in reply.headers) is not chunked


def test_huge_body_abandoned_by_client_does_not_break_the_server(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.huge(64 * 1024 * 1024))
    with raw_socket(fault_opa) as sock:
        sock.sendall(REQUEST)
        assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK")
    fault_opa.set(Behaviour())
    assert ask(fault_opa).json() == {"result": True}


def test_slow_drip(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.slow_drip(0.02, body=b'{"result":true}'))  # 15 bytes: 14 pauses
    started = time.monotonic()
    reply = ask(fault_opa)
    elapsed = time.monotonic() - started
    assert reply.body == b'{"result":true}'
    assert 14 * 0.02 <= elapsed < 3


def test_raw_bytes(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"))
    with raw_socket(fault_opa) as sock:
        sock.sendall(REQUEST)
        assert read_all(sock) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"


def test_framing_headers_given_by_the_test_are_sent_as_is(fault_opa: FaultOpa) -> None:
    # Announces 100 bytes, sends 2, closes.
    fault_opa.set(Behaviour(body=b"{}", headers=(("Content-Length", "100"),), keep_alive=False))
    with pytest.raises(http.client.IncompleteRead):
        ask(fault_opa)


def test_reset_closes_a_hanging_connection(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.hang())
    with raw_socket(fault_opa) as sock:
        sock.sendall(REQUEST)
        assert fault_opa.wait_for_count(1, timeout=2)
        started = time.monotonic()
        fault_opa.reset()
        assert read_all(sock) == b""
        assert time.monotonic() - started < 2


def test_unix_socket(fault_opa_unix: FaultOpa) -> None:
    assert fault_opa_unix.url.startswith("unix:///")
    fault_opa_unix.set(Behaviour.answer(418, b"teapot"))
    reply = ask(fault_opa_unix)
    assert (reply.status, reply.body) == (418, b"teapot")
    assert fault_opa_unix.requests[0].path == "/v1/data/envoy/authz/allow"


async def test_usable_from_async_tests(fault_opa: FaultOpa) -> None:
    fault_opa.set(Behaviour.delayed(0.1))
    host, port = fault_opa.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(REQUEST)
        await writer.drain()
        # The server runs on its own loop: this one stays free while it waits.
        ticks = 0
        read = asyncio.ensure_future(reader.readuntil(b'{"result":true}\n'))
        while not read.done():
            ticks += 1
            await asyncio.sleep(0.01)
        assert (await read).startswith(b"HTTP/1.1 200 OK")
        assert ticks >= 5
    finally:
        writer.close()
        await writer.wait_closed()
