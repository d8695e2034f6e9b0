"""Send one request to Envoy byte for byte: HTTP/1.1 over a raw socket, or HTTP/2 with
prior knowledge (h2c) through the `h2` state machine, with the body in the pieces and
pauses the request asks for."""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass
from typing import Final

import h2.config
import h2.connection
import h2.events

from tests.differential.strategies import WireRequest

TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class WireResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name), None)


def http1_bytes(request: WireRequest, port: int, marker: str) -> list[bytes]:
    """The request as the pieces written to the socket (the head is the first)."""
    lines = [f"{request.method} {request.target} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in request.all_headers(marker)]
    if request.framing == "length":
        lines.append(f"content-length: {len(request.body)}")
    elif request.framing == "chunked":
        lines.append("transfer-encoding: chunked")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    pieces = request.body_pieces()
    if request.framing == "chunked":
        pieces = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece] + [b"0\r\n\r\n"]
    return [head, *pieces]


def send_http1(request: WireRequest, port: int, marker: str) -> WireResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        for index, piece in enumerate(http1_bytes(request, port, marker)):
            if index > 1 and request.pause:
                time.sleep(request.pause)
            try:
                sock.sendall(piece)
            except OSError:
                break  # Envoy answered (and closed) before the whole body was sent
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        body = reply.read()
        return WireResponse(reply.status, tuple(reply.getheaders()), body)


def send_http2(request: WireRequest, port: int, marker: str) -> WireResponse:
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    headers = [
        (b":method", request.method.encode()),
        (b":scheme", request.h2_scheme.encode()),
        (b":authority", f"127.0.0.1:{port}".encode()),
        (b":path", request.target.encode("utf-8", "surrogateescape")),
    ]
    headers += [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in request.all_headers(marker)]
    if request.framing == "length":
        headers.append((b"content-length", str(len(request.body)).encode()))
    stream = 1
    pieces = [piece for piece in request.body_pieces() if piece]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        conn.send_headers(stream, headers, end_stream=not pieces)
        sock.sendall(conn.data_to_send())
        status, body = 0, bytearray()
        got_headers: list[tuple[str, str]] = []
        ended = False
        for index, piece in enumerate(pieces):
            if index and request.pause:
                time.sleep(request.pause)
            ended = _drain(sock, conn, stream, got_headers, body, wait=False) or ended
            if ended:
                break
            conn.send_data(stream, piece, end_stream=index == len(pieces) - 1)
            sock.sendall(conn.data_to_send())
        while not ended:
            ended = _drain(sock, conn, stream, got_headers, body, wait=True)
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    for name, value in got_headers:
        if name == ":status":
            status = int(value)
    return WireResponse(status, tuple(got_headers), bytes(body))


def _drain(
    sock: socket.socket,
    conn: h2.connection.H2Connection,
    stream: int,
    headers: list[tuple[str, str]],
    body: bytearray,
    *,
    wait: bool,
) -> bool:
    """Read what the server sent; True once the stream is over."""
    sock.settimeout(TIMEOUT if wait else 0.0)
    try:
        data = sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return False
    finally:
        sock.settimeout(TIMEOUT)
    if not data:
        raise ConnectionError("Envoy closed the HTTP/2 connection")
    over = False
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
            headers.extend((bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in event.headers)
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
            body.extend(event.data)
            conn.acknowledge_received_data(event.flow_controlled_length, stream)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            over = over or event.stream_id == stream
        elif isinstance(event, h2.events.ConnectionTerminated):
            over = True
    sock.sendall(conn.data_to_send())
    return over


def send(request: WireRequest, port: int, marker: str) -> WireResponse:
    """The response; status 0 when Envoy closed or reset the connection without one
    (its codec refused the request)."""
    try:
        if request.protocol == "HTTP/2":
            return send_http2(request, port, marker)
        return send_http1(request, port, marker)
    except (ConnectionError, http.client.HTTPException) as exc:
        return WireResponse(0, (), f"no response: {exc!r}".encode())
