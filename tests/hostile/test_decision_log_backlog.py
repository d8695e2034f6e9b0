"""A decision log whose destination drains slowly or not at all (a busy container log
driver, a full disk) never holds the event loop: lines wait in a bounded backlog
written by a thread, and a check whose line cannot be kept is denied."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from sidecar.log_writer import BacklogFull, LineWriter, WriterFailed
from tests.check_requests import check_request
from tests.fault_opa import FaultOpa
from tests.operations.sidecar_process import READY_LINE, child_env, free_port, serve_command

LINE = b'{"decision": "' + b"x" * 200 + b'"}\n'
BACKLOG = 64 << 10
F_SETPIPE_SZ = 1031


@pytest.fixture
def unread_pipe() -> Iterator[tuple[int, int]]:
    """A pipe with a one-page buffer that nobody reads."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_lines_for_a_stuck_pipe_are_taken_at_once_until_the_backlog_is_full(
    unread_pipe: tuple[int, int],
) -> None:
    read_end, write_end = unread_pipe
    writer = LineWriter(open(write_end, "wb", closefd=False), BACKLOG)  # noqa: SIM115
    slowest, taken = 0.0, 0
    with pytest.raises(BacklogFull):
        for _ in range(10 * BACKLOG // len(LINE)):
            started = time.perf_counter()
            try:
                writer.write(LINE)
            finally:
                slowest = max(slowest, time.perf_counter() - started)
            taken += 1
    assert slowest < 0.05
    assert BACKLOG // len(LINE) <= taken <= (BACKLOG + 8192) // len(LINE) + 1
    # Once the reader catches up, the backlog drains and lines are taken again.
    drained = 0
    while drained < taken * len(LINE):
        drained += len(os.read(read_end, 1 << 20))
    assert writer.flush(5.0)
    writer.write(LINE)
    writer.close(1.0)


class _FailingStream(io.RawIOBase):
    """A destination whose writes fail (a full disk) until `healthy` is set."""

    def __init__(self) -> None:
        self.healthy = False
        self.written = b""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        if not self.healthy:
            raise OSError(errno.ENOSPC, "no space left on device")
        assert isinstance(data, bytes)
        self.written += data
        return len(data)


def test_after_a_failed_write_lines_are_refused_until_a_retry_succeeds() -> None:
    stream = _FailingStream()
    writer = LineWriter(stream, BACKLOG)  # type: ignore[arg-type]
    writer.write(LINE)
    deadline = time.monotonic() + 5
    while True:  # the writer thread meets the failure
        try:
            writer.write(LINE)
        except WriterFailed:
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stream.healthy = True
    assert writer.flush(5.0)  # retried within a second or so
    writer.write(LINE)
    assert writer.flush(5.0)
    assert stream.written.count(b"\n") >= 2
    writer.close(1.0)


def _start_sidecar(opa_url: str, workdir: Path, stdout: int) -> tuple[subprocess.Popen[bytes], str]:
    grpc_port = free_port()
    command = serve_command(
        "--opa-url",
        opa_url,
        "--grpc-addr",
        f"127.0.0.1:{grpc_port}",
        "--http-addr",
        f"unix://{workdir / 'http.sock'}",
        "--probe-addr",
        f"unix://{workdir / 'probe.sock'}",
        "--decision-log-backlog-bytes",
        str(BACKLOG),
    )
    stderr_path = workdir / "stderr.log"
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(command, stdout=stdout, stderr=err, env=child_env())
    deadline = time.monotonic() + 20
    while READY_LINE not in stderr_path.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, stderr_path.read_text()
        time.sleep(0.05)
    return process, f"127.0.0.1:{grpc_port}"


async def test_a_sidecar_whose_stdout_nobody_reads_keeps_answering_and_denies_what_it_cannot_log(
    fault_opa: FaultOpa, unread_pipe: tuple[int, int], tmp_path: Path
) -> None:
    _, write_end = unread_pipe
    process, target = _start_sidecar(fault_opa.url, tmp_path, write_end)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
            request = check_request("GET", "/orders", headers={"x-pad": "p" * 500})
            answers: list[CheckResponse] = []
            slowest = 0.0
            for _ in range(3 * BACKLOG // 400):
                started = time.perf_counter()
                answers.append(await stub.Check(request, timeout=1.0))
                slowest = max(slowest, time.perf_counter() - started)
    finally:
        process.kill()
        process.wait(5)

    assert slowest < 0.5
    codes = [answer.status.code for answer in answers]
    assert codes[0] == 0  # allowed while its line could be kept
    assert codes[-1] == 7  # denied once the backlog is full
    reasons = {
        answer.dynamic_metadata.fields["deny_reason"].string_value for answer in answers if answer.status.code
    }
    assert reasons == {"internal_error"}


class _RecordingStream(io.RawIOBase):
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        assert isinstance(data, bytes)
        self.writes.append(data)
        return len(data)


def test_each_write_is_whole_lines_within_the_atomic_pipe_size() -> None:
    # Worker processes share stdout: a write up to PIPE_BUF is never interleaved with another's.
    stream = _RecordingStream()
    writer = LineWriter(stream, BACKLOG)  # type: ignore[arg-type]
    long_line = b'{"long": "' + b"y" * 6000 + b'"}\n'
    for n in range(200):
        writer.write(long_line if n == 100 else LINE)
    assert writer.flush(5.0)
    writer.close(1.0)
    assert b"".join(stream.writes) == LINE * 100 + long_line + LINE * 99
    for chunk in stream.writes:
        assert chunk.endswith(b"\n")
        assert len(chunk) <= select.PIPE_BUF or chunk == long_line
