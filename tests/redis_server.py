"""A real redis-server (Debian's package) for the deny memory's store tests:
started on a free loopback port with nothing persisted, and paused, resumed,
slowed or killed on demand."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self._binary = binary
        self._workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self._workdir), "--enable-debug-command", "local"]
        log = open(self._workdir / "redis.log", "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while self.command("PING") != b"+PONG":
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start: {(self._workdir / 'redis.log').read_text()}")
            time.sleep(0.02)
        return self

    def command(self, *words: str, timeout: float = 1.0) -> bytes:
        """One inline command; its first reply line, or b"" when the server does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return sock.recv(4096).split(b"\r\n", 1)[0]
        except OSError:
            return b""

    def keys(self) -> list[bytes]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
            sock.sendall(b"KEYS *\r\n")
            time.sleep(0.05)
            reply = sock.recv(1 << 20)
        return [line for line in reply.split(b"\r\n")[1:] if line and not line.startswith(b"$")]

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/install-system-tools.sh")
    workdir = Path(tempfile.mkdtemp(prefix="redis-"))
    server = RedisServer(binary, workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
