"""What a check and an upstream received, for the request-view behaviour tests:
an ext_authz gRPC server and an HTTP-mode check server that allow everything
and keep every request, an upstream that keeps the raw body, and HTTP/1.1 and
HTTP/2 clients that send exactly the bytes and headers they are given."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import h2.config
import h2.connection
import h2.events

from sidecar._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from sidecar._proto.google.rpc import status_pb2


class RecordingAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self) -> None:
        self.checks: list[external_auth_pb2.CheckRequest] = []

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> external_auth_pb2.CheckResponse:
        self.checks.append(request)
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes


@dataclass
class RecordingHttp:
    """An HTTP/1.1 server that answers 200 and keeps what it received: the
    upstream, or the check server of HTTP mode."""

    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        recording = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                body = self._body()
                headers = {name.lower(): value for name, value in self.headers.items()}
                recording.received.append(Received(self.path, headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_POST = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def http1(port: int, head: str, body_pieces: tuple[bytes, ...] = (), pause: float = 0.0) -> int:
    """Send a request head (request line and headers, CRLF-separated, without the
    blank line) and then each body piece, pausing between them; the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(head.encode("latin-1") + b"\r\n\r\n")
        for piece in body_pieces:
            connection.sendall(piece)
            time.sleep(pause)
        reply = b""
        while b"\r\n" not in reply:
            data = connection.recv(65536)
            if not data:
                break
            reply += data
    return int(reply.split(b" ", 2)[1])


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def http2(port: int, headers: list[tuple[str, str]], body: bytes = b"") -> int:
    """One HTTP/2 request over cleartext (prior knowledge), headers as given."""
    config = h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False
    )
    connection = h2.connection.H2Connection(config)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, headers, end_stream=not body)
        if body:
            connection.send_data(stream, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        while True:
            data = sock.recv(65536)
            if not data:
                raise AssertionError("connection closed before a response")
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    # header_encoding makes names and values str at run time
                    return int(
                        next(value for name, value in event.headers if name in (":status", b":status"))
                    )
            sock.sendall(connection.data_to_send())
