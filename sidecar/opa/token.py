"""The bearer token for OPA, read from a file and re-read when the file changes.

The token is only ever placed in the Authorization header; it is never
logged, and errors about the file never quote its content.

Reading never blocks a check: at start the file is read once (a bad one stops
the start); once serving, a thread looks at it every second and the checks use
whatever token is current, so a change is in use within about a second. The
file must be a regular file (a FIFO or a device could block or never end) of
at most MAX_TOKEN_BYTES.

A rotation that leaves a bad file (unreadable, empty, too large, not a regular
file, not one printable token) drops the old token rather than keep it: a
token is often rotated because the old one must stop working. Until the file
is good again no token is sent, so an OPA that requires one refuses every
query and every check is denied (opa_http_status). The bad file is read once,
not again until it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from sidecar.regular_file import FileRefused, read_regular_file

log = logging.getLogger(__name__)
_RECHECK_SECONDS = 1.0  # how often the file is looked at
MAX_TOKEN_BYTES = 64 << 10  # far above any real bearer token, JWTs included

# What identifies a version of the file: modification time, size, inode.
Stamp = tuple[int, int, int] | None


class TokenFileError(ValueError):
    pass


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: str) -> str:
    """The token in the file; blocking, so never called on the event loop once serving."""
    try:
        data = read_regular_file(path, MAX_TOKEN_BYTES)
    except FileRefused as refused:
        raise TokenFileError(f"--opa-token-file {path} {refused}") from None
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise TokenFileError(f"--opa-token-file {path} must hold one non-empty token of printable ASCII")
    return token


class TokenFile:
    """Callable returning the current token ("" while the file is bad)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp = _stamp(path)
        self._token = _read(path)  # at startup a bad file is fatal
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> str:
        if self._loop is None:  # the first request on the event loop starts the looking
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
                self._loop.call_later(_RECHECK_SECONDS, self._look)
        return self._token

    def _look(self) -> None:
        assert self._loop is not None
        try:
            future = self._loop.run_in_executor(None, self._changed_file, self._stamp)
        except RuntimeError:  # the loop is shutting down
            return
        future.add_done_callback(self._apply)

    def _changed_file(self, known: Stamp) -> tuple[Stamp, str | None, TokenFileError | None] | None:
        """In a thread: None if the file is as last seen, else its stamp and token or error."""
        stamp = _stamp(self._path)
        if stamp == known:
            return None
        try:
            return stamp, _read(self._path), None
        except TokenFileError as exc:
            return stamp, None, exc

    def _apply(self, future: asyncio.Future[tuple[Stamp, str | None, TokenFileError | None] | None]) -> None:
        if future.cancelled():
            return
        assert self._loop is not None
        if not self._loop.is_closed():
            self._loop.call_later(_RECHECK_SECONDS, self._look)
        change = None if future.exception() is not None else future.result()
        if change is None:
            return
        self._stamp, token, error = change
        if token is not None:
            self._token = token
            log.info("OPA token file %s changed; new token in use", self._path)
        else:
            self._token = ""
            log.warning("%s; no token is sent to OPA until the file is fixed", error)
