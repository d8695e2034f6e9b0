"""The OPA token file is read off the event loop, only if it is a regular file of a
bounded size, and a bad rotation is read once, not on every check."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sidecar.opa.token as token_module
from sidecar.opa.token import MAX_TOKEN_BYTES, TokenFile, TokenFileError

TOKEN_A = "tokA-7Qp2vX9mZr4LwK"
TOKEN_B = "tokB-c3Nf8Hs1Ye6TjU"


def _replace(path: Path, content: str) -> None:
    staged = path.with_name(path.name + ".new")
    staged.write_text(content)
    os.replace(staged, path)


def _replace_with_fifo(path: Path) -> Path:
    staged = path.with_name(path.name + ".fifo")
    os.mkfifo(staged)
    os.replace(staged, path)
    return path


@contextlib.contextmanager
def _writer_unblocks(fifo: Path, after: float) -> Iterator[None]:
    """Opens the FIFO for writing after `after` seconds, so that a reader stuck
    waiting for a writer (the behaviour under test) is released in the end."""
    done = threading.Event()

    def release() -> None:
        if not done.wait(after):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)


@pytest.mark.timeout(20)
def test_a_fifo_at_start_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    started = time.monotonic()
    with _writer_unblocks(fifo, after=3.0), pytest.raises(TokenFileError, match="not a regular file"):
        TokenFile(str(fifo))
    assert time.monotonic() - started < 1.0


def test_a_file_too_large_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a" * (MAX_TOKEN_BYTES + 1))
    with pytest.raises(TokenFileError, match="larger than"):
        TokenFile(str(path))


async def _until(condition: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


@pytest.mark.timeout(20)  # reading the FIFO on the loop used to block it for good
async def test_a_rotation_to_a_fifo_never_blocks_a_check_and_drops_the_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN_A)
    token = TokenFile(str(path))
    fifo = _replace_with_fifo(path)
    slowest = 0.0
    with _writer_unblocks(fifo, after=3.0):
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and token() != "":
            started = time.perf_counter()
            token()
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.01)
    assert slowest < 0.05
    assert token() == ""  # no token is sent while the file is bad


@pytest.mark.timeout(20)
async def test_a_bad_rotation_is_read_once_and_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN_A)
    token = TokenFile(str(path))
    reads: list[int] = []
    real_read = token_module._read

    def counted(name: str) -> str:
        reads.append(threading.get_ident())
        return real_read(name)

    monkeypatch.setattr(token_module, "_read", counted)
    _replace(path, f"Bearer {TOKEN_B}")  # a common mistake: the scheme in the file
    await _until(lambda: token() == "", within=2.0)
    for _ in range(150):  # 1.5 s of checks
        assert token() == ""
        await asyncio.sleep(0.01)
    assert len(reads) == 1
    _replace(path, TOKEN_B)
    await _until(lambda: token() == TOKEN_B, within=2.0)
    assert len(reads) == 2
    assert threading.get_ident() not in reads  # never on the event loop's thread
