"""A fault-injecting OPA stand-in for adversarial tests.

Raw asyncio streams, so that every byte it sends is under the test's control, on an event
loop in a background thread, so sync and async tests alike can drive it::

    with FaultOpa() as fault:                      # or the `fault_opa` fixture
        fault.set(Behaviour.delayed(0.5))          # every request: wait 0.5 s, then 200 {"result":true}
        ...
        fault.set(lambda req: Behaviour.answer(500) if req.json()["input"]["x"] else Behaviour())
        assert fault.count == 1 and fault.requests[0].path == "/v1/data/envoy/authz/allow"

Normal answers keep the connection alive (HTTP/1.1); the fault actions close or reset it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import itertools
import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import parse_qs

DEFAULT_BODY: Final = b'{"result":true}\n'
_MAX_HEAD_BYTES: Final = 1024 * 1024
_STREAM_CHUNK: Final = 64 * 1024


class Action(enum.Enum):
    RESPOND = "respond"  # a complete response, possibly delayed, stalled or dripped
    CLOSE = "close"  # read the request, then close without a byte of answer
    RESET = "reset"  # headers and part of the body, then a TCP reset
    TRUNCATED_CHUNKED = "truncated_chunked"  # chunked body that ends without its last chunk
    RAW = "raw"  # `body` is written as is (no status line added), then the connection closes


@dataclass(frozen=True)
class Behaviour:
    """How to answer one request. The default is a normal `200 {"result":true}`.

    `headers` are sent after Content-Type; if they include Content-Length or
    Transfer-Encoding, no framing header is added (so a test can lie about the length).
    `split` is where the body is cut for `stall`, RESET and TRUNCATED_CHUNKED (default: half).
    `huge_size` > 0 replaces the body by that many bytes of valid JSON, streamed.
    """

    status: int = 200
    body: bytes = DEFAULT_BODY
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    stall: float = 0.0
    split: int | None = None
    drip: float = 0.0
    chunked: bool = False
    huge_size: int = 0
    action: Action = Action.RESPOND
    keep_alive: bool = True

    @classmethod
    def answer(
        cls,
        status: int = 200,
        body: bytes = DEFAULT_BODY,
        content_type: str | None = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Behaviour:
        return cls(status=status, body=body, content_type=content_type, headers=headers)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Behaviour:
        return cls(status=status, body=json.dumps(value).encode() + b"\n")

    @classmethod
    def delayed(cls, seconds: float, then: Behaviour | None = None) -> Behaviour:
        """Wait before the status line."""
        return replace(then or cls(), delay=seconds)

    @classmethod
    def hang(cls) -> Behaviour:
        """Never answer (until reset() or stop())."""
        return cls(delay=3600.0)

    @classmethod
    def stalled(cls, seconds: float, at: int | None = None, then: Behaviour | None = None) -> Behaviour:
        """Send headers and `at` body bytes, wait, then the rest."""
        return replace(then or cls(), stall=seconds, split=at)

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Behaviour:
        return cls(status=status, body=b"", content_type=None, headers=(("Location", location),))

    @classmethod
    def close_early(cls) -> Behaviour:
        return cls(action=Action.CLOSE)

    @classmethod
    def reset_mid_body(cls, after: float = 0.05, body: bytes = DEFAULT_BODY) -> Behaviour:
        """Headers and half the body, wait `after` (so they reach the client), then RST."""
        return cls(action=Action.RESET, stall=after, body=body)

    @classmethod
    def truncated_chunked(cls, body: bytes = DEFAULT_BODY) -> Behaviour:
        return cls(action=Action.TRUNCATED_CHUNKED, body=body, chunked=True)

    @classmethod
    def huge(cls, size: int, chunked: bool = False) -> Behaviour:
        """`size` bytes of valid JSON (`{"result":true,"pad":"aaa..."}`), streamed."""
        return cls(huge_size=size, chunked=chunked)

    @classmethod
    def slow_drip(cls, interval: float, body: bytes = DEFAULT_BODY) -> Behaviour:
        """Headers at once, then the body one byte every `interval` seconds."""
        return cls(drip=interval, body=body)

    @classmethod
    def wrong_content_type(cls, content_type: str = "text/html", body: bytes = DEFAULT_BODY) -> Behaviour:
        return cls(content_type=content_type, body=body)

    @classmethod
    def raw(cls, data: bytes) -> Behaviour:
        """Exactly these bytes on the wire (write your own status line), then close."""
        return cls(action=Action.RAW, body=data)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    target: str  # as sent: path and query
    path: str  # raw, not percent-decoded
    query: str  # raw query string, without "?"
    headers: tuple[tuple[str, str], ...]  # in arrival order, names as sent
    body: bytes  # de-chunked, not decompressed
    connection: int  # 1 for the first connection the server accepted, 2 for the next...

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body)


Chooser = Callable[[RecordedRequest], Behaviour]


class _BadRequest(Exception):
    pass


class FaultOpa:
    """The fault server. `start()` (or `with`) before use; `url` is where it listens."""

    def __init__(self, *, unix_path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1") -> None:
        self._host = host
        self._unix_path = None if unix_path is None else str(unix_path)
        self._lock = threading.Condition()
        self._chooser: Chooser = _default_chooser
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._connections = 0
        self._connection_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> FaultOpa:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-opa", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            raise RuntimeError(f"fault OPA did not start: {failure[0] if failure else 'timeout'}")
        return self

    async def _listen(self) -> None:
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)
            self._server = await asyncio.start_unix_server(
                self._serve, self._unix_path, limit=_MAX_HEAD_BYTES
            )
            self.url = f"unix://{self._unix_path}"
        else:
            self._server = await asyncio.start_server(self._serve, self._host, 0, limit=_MAX_HEAD_BYTES)
            port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://{self._host}:{port}"

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already gone
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_connections()
        if self._server is not None:
            await self._server.wait_closed()

    async def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FaultOpa:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- control from the test -------------------------------------------------------------

    def set(self, behaviour: Behaviour | Chooser) -> None:
        """Answer every following request with `behaviour`, or with `behaviour(request)`."""
        chooser: Chooser = behaviour if callable(behaviour) else (lambda _request: behaviour)
        with self._lock:
            self._chooser = chooser

    def reset(self, timeout: float = 5.0) -> None:
        """Default behaviour, empty records and counters, and no open connections."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._drop_connections(), self._loop).result(timeout)
        with self._lock:
            self._chooser = _default_chooser
            self._requests.clear()
            self._errors.clear()
            self._connections = 0
            self._connection_ids = itertools.count(1)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def connections(self) -> int:
        """Connections accepted since the last reset."""
        with self._lock:
            return self._connections

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by a behaviour callable (such requests were answered 500)."""
        with self._lock:
            return list(self._errors)

    def wait_for_count(self, n: int, timeout: float = 5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= n, timeout)

    # -- serving -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self._connections += 1
        connection = next(self._connection_ids)
        try:
            while True:
                request = await _read_request(reader, writer, connection)
                if request is None:
                    break
                behaviour = self._record_and_choose(request)
                if not await _answer(writer, behaviour):
                    break
                if (request.header("Connection") or "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _BadRequest):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    def _record_and_choose(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
            chooser = self._chooser
        try:
            return chooser(request)
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            return Behaviour.answer(
                500, f"fault_opa: behaviour callable failed: {exc!r}\n".encode(), "text/plain"
            )


def _default_chooser(_request: RecordedRequest) -> Behaviour:
    return Behaviour()


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
) -> RecordedRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed between requests
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ")
    except ValueError:
        raise _BadRequest(lines[0]) from None
    headers = tuple(
        (name.strip(), value.strip())
        for name, sep, value in (h.partition(":") for h in lines[1:] if h)
        if sep
    )
    lookup = {name.lower(): value for name, value in reversed(headers)}  # first one wins
    if lookup.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in lookup.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(_number(lookup.get("content-length") or "0", 10))
    path, _, query = target.partition("?")
    return RecordedRequest(method, target, path, query, headers, body, connection)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = _number(size_line.split(b";")[0].strip().decode("latin-1") or "0", 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _number(text: str, base: int) -> int:
    try:
        value = int(text, base)
    except ValueError:
        raise _BadRequest(f"bad length {text!r}") from None
    if value < 0:
        raise _BadRequest(f"bad length {text!r}")
    return value


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def _head(b: Behaviour, length: int) -> bytes:
    try:
        reason = http.HTTPStatus(b.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {b.status} {reason}"]
    if b.content_type is not None:
        lines.append(f"Content-Type: {b.content_type}")
    lines += [f"{name}: {value}" for name, value in b.headers]
    framing_given = any(name.lower() in ("content-length", "transfer-encoding") for name, _ in b.headers)
    if not framing_given:
        lines.append("Transfer-Encoding: chunked" if b.chunked else f"Content-Length: {length}")
    if not b.keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _split_point(b: Behaviour, body: bytes) -> int:
    if b.split is not None:
        return max(0, min(b.split, len(body)))
    return len(body) // 2


async def _answer(writer: asyncio.StreamWriter, b: Behaviour) -> bool:
    """Send the answer; True when the connection may serve another request."""
    if b.delay:
        await asyncio.sleep(b.delay)
    if b.action is Action.CLOSE:
        return False
    if b.action is Action.RAW:
        writer.write(b.body)
        await writer.drain()
        return False
    if b.huge_size:
        await _stream_huge(writer, b)
        return b.keep_alive
    body = b.body
    cut = _split_point(b, body)
    writer.write(_head(b, len(body)))
    if b.action is Action.TRUNCATED_CHUNKED:
        writer.write(_chunk(body[:cut] or body))
        await writer.drain()
        return False
    payload = _chunk(body) + b"0\r\n\r\n" if b.chunked else body
    if b.action is Action.RESET:
        writer.write(payload[:cut])
        await writer.drain()
        await asyncio.sleep(b.stall)
        _reset(writer)
        return False
    if b.stall:
        writer.write(payload[:cut])
        await writer.drain()
        await asyncio.sleep(b.stall)
        payload = payload[cut:]
    if b.drip:
        await writer.drain()
        for i in range(len(payload)):
            writer.write(payload[i : i + 1])
            await writer.drain()
            if i + 1 < len(payload):
                await asyncio.sleep(b.drip)
    else:
        writer.write(payload)
        await writer.drain()
    return b.keep_alive


async def _stream_huge(writer: asyncio.StreamWriter, b: Behaviour) -> None:
    prefix, suffix = b'{"result":true,"pad":"', b'"}'
    pad = max(0, b.huge_size - len(prefix) - len(suffix))
    writer.write(_head(b, len(prefix) + pad + len(suffix)))
    pieces = itertools.chain([prefix], _padding(pad), [suffix])
    for piece in pieces:
        writer.write(_chunk(piece) if b.chunked else piece)
        await writer.drain()
    if b.chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _padding(total: int) -> itertools.chain[bytes]:
    full, rest = divmod(total, _STREAM_CHUNK)
    return itertools.chain(itertools.repeat(b"a" * _STREAM_CHUNK, full), [b"a" * rest] if rest else [])


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        # Linger on with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
