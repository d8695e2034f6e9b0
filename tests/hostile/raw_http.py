"""A bare HTTP/1.1 client for requests no well-behaved client would send."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field


@dataclass
class RawAnswer:
    status: int  # 0: the connection closed without an answer
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # from the last byte sent to the answer (or the close)


def connect(target: tuple[str, int] | str) -> socket.socket:
    if isinstance(target, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target)
        return sock
    return socket.create_connection(target)


def read_answer(sock: socket.socket, timeout: float = 5.0) -> RawAnswer:
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    took = time.monotonic() - started
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    if not head.startswith("HTTP/"):
        return RawAnswer(0, seconds=took)
    status_line, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, took)


def exchange(target: tuple[str, int] | str, data: bytes, timeout: float = 5.0) -> RawAnswer:
    """Send `data` at once and read the answer's head (a server may answer and
    close before taking all of it)."""
    with connect(target) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_answer(sock, timeout)
