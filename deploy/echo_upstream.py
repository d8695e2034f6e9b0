"""The demo application: answers every request with what it received, as JSON.

    python echo_upstream.py --addr 127.0.0.1:8080

Standard library only, so it runs from a plain `python` image (docker compose,
Kubernetes) as well as in-process in the end-to-end tests (`EchoUpstream`).
The answer: {"method", "path", "headers": {name: [values...]}, "body_bytes", "body"}
with header names lower-cased and the body decoded as UTF-8 (replacement characters
for anything else).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream connections expect
    server: _EchoServer

    def _echo(self) -> None:
        body = self._read_body()
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        received = {
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body_bytes": len(body),
            "body": body.decode("utf-8", errors="replace"),
        }
        self.server.record(received)
        payload = json.dumps(received, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], verbose: bool, keep_received: bool) -> None:
        super().__init__(address, _EchoHandler)
        self.verbose = verbose
        self.keep_received = keep_received  # only for tests: a long-running server would grow
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, received: dict[str, Any]) -> None:
        if not self.keep_received:
            return
        with self._lock:
            self.received.append(received)


class EchoUpstream:
    """The echo server on a background thread. `port` 0 picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        self._server = _EchoServer((host, port), verbose, keep_received=True)
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-upstream", daemon=True)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every request answered so far, oldest first."""
        with self._server._lock:
            return list(self._server.received)

    def start(self) -> EchoUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> EchoUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Answer every HTTP request with what it received.")
    parser.add_argument("--addr", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    args = parser.parse_args()
    host, _, port = args.addr.rpartition(":")
    server = _EchoServer((host, int(port)), verbose=True, keep_received=False)
    # Stop on SIGTERM as on Ctrl-C: containers are stopped with SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on {host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
