"""Reading the small files the sidecar is pointed at (certificates, keys, the
OPA token, a descriptor set) without letting a special file hold the reader.

Opened without waiting, because opening a FIFO for reading waits for a
writer; then checked to be a regular file before a byte is read, and read no
further than a limit, so a device or a huge file costs nothing.
"""

from __future__ import annotations

import os
import stat


class FileRefused(ValueError):
    """Why the file was not read: a short reason, never the file's content."""


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise FileRefused(f"cannot read it ({exc.strerror or type(exc).__name__})") from None


def _require_regular(fd: int) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise FileRefused("is not a regular file")


def check_regular_file(path: str) -> None:
    """Refuse now what read_regular_file would refuse for its kind."""
    fd = _open(path)
    try:
        _require_regular(fd)
    finally:
        os.close(fd)


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``."""
    fd = _open(path)
    try:
        _require_regular(fd)
        data = b""
        while len(data) <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise FileRefused(f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise FileRefused(f"is larger than {max_bytes} bytes")
    return data
