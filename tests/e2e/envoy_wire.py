"""Raw clients and recording ext_authz servers, to see exactly what Envoy forwards.

The clients write HTTP/1.1 and HTTP/2 (h2c, prior knowledge) by hand, so a test controls
the framing (content-length, chunked, DATA frames), the pauses between pieces and every
header byte, including ones a normal client library refuses to send. The recording
servers stand where the sidecar stands and keep what Envoy sent them, untouched.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
MAX_H2_FRAME = 16384  # the HTTP/2 default SETTINGS_MAX_FRAME_SIZE


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


# --- clients ----------------------------------------------------------------------------


def h1_request(
    port: int,
    head: bytes,
    pieces: Sequence[bytes] = (),
    *,
    pause: float = 0.0,
    timeout: float = 10.0,
) -> Reply:
    """Write `head` (request line and headers, without the blank line) and then each piece,
    pausing `pause` seconds between pieces; read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.rstrip(b"\r\n") + b"\r\n\r\n")
        for index, piece in enumerate(pieces):
            if index and pause:
                time.sleep(pause)
            sock.sendall(piece)
        # The method tells http.client whether a body follows (none for HEAD).
        response = http.client.HTTPResponse(sock, method=head.split(b" ", 1)[0].decode())
        response.begin()
        return Reply(response.status, response.read())


def chunked(pieces: Sequence[bytes]) -> list[bytes]:
    """Each piece as one HTTP/1.1 chunk; the last-chunk goes with the last piece."""
    framed = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
    framed[-1] += b"0\r\n\r\n"
    return framed


def h2_request(
    port: int,
    headers: Sequence[tuple[bytes, bytes]],
    pieces: Sequence[bytes] = (),
    *,
    pause: float = 0.0,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP/2 stream over cleartext (prior knowledge): HEADERS, then one DATA write per
    piece (split at the frame size limit), pausing between pieces; END_STREAM on the last."""
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        sock.sendall(conn.data_to_send())
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, list(headers), end_stream=not pieces)
        sock.sendall(conn.data_to_send())
        for index, piece in enumerate(pieces):
            if index and pause:
                time.sleep(pause)
            last = index == len(pieces) - 1
            for start in range(0, max(len(piece), 1), MAX_H2_FRAME):
                frame = piece[start : start + MAX_H2_FRAME]
                conn.send_data(stream, frame, end_stream=last and start + MAX_H2_FRAME >= len(piece))
            sock.sendall(conn.data_to_send())
        return _h2_read_reply(conn, sock, stream)


def _h2_read_reply(conn: h2.connection.H2Connection, sock: socket.socket, stream: int) -> Reply:
    status, body = 0, bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response ended")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                return Reply(status, bytes(body))
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                raise ConnectionError(f"stream reset: {event.error_code!r}")
        sock.sendall(conn.data_to_send())


# --- recording ext_authz servers ----------------------------------------------------------


@dataclass
class RecordingGrpcAuthz:
    """An ext_authz gRPC server that allows everything and keeps every CheckRequest."""

    checks: list[CheckRequest] = field(default_factory=list)
    port: int = 0

    @contextlib.contextmanager
    def serving(self) -> Iterator[RecordingGrpcAuthz]:
        def check(request: CheckRequest, _context: grpc.ServicerContext) -> CheckResponse:
            self.checks.append(request)
            return CheckResponse()  # status code 0: allowed, nothing changed

        handler = grpc.method_handlers_generic_handler(
            "envoy.service.auth.v3.Authorization",
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    check,
                    request_deserializer=CheckRequest.FromString,
                    response_serializer=CheckResponse.SerializeToString,
                )
            },
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            yield self
        finally:
            server.stop(None)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class RawCheck:
    """One HTTP-mode check request as Envoy sent it: headers in order, body bytes."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name]
        return ",".join(values) if values else None


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def _record(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        # Header values as the bytes Envoy wrote (the stdlib reads them as latin-1).
        headers = [
            (name, value.encode("latin-1").decode("utf-8", "replace")) for name, value in self.headers.items()
        ]
        self.server.checks.append(RawCheck(self.command, self.path, headers, body))
        self.server.raw_values.append([(n, v.encode("latin-1")) for n, v in self.headers.items()])
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _record

    def log_message(self, format: str, *args: object) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.checks: list[RawCheck] = []
        self.raw_values: list[list[tuple[str, bytes]]] = []


@contextlib.contextmanager
def recording_http_authz() -> Iterator[RecordingServer]:
    """An ext_authz HTTP-mode server that allows everything and keeps every check request."""
    server = RecordingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
