"""The bearer token for OPA, read from a file and re-read when the file changes.

The token is only ever placed in the Authorization header; it is never
logged, and errors about the file never quote its content.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)
_RECHECK_SECONDS = 1.0  # stat the file at most this often on the request path


class TokenFileError(ValueError):
    pass


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read --opa-token-file {path}: {type(exc).__name__}") from None
    if not token or any(c.isspace() or not c.isprintable() or not c.isascii() for c in token):
        raise TokenFileError(f"--opa-token-file {path} must hold one non-empty token of printable ASCII")
    return token


class TokenFile:
    """Callable returning the current token. A file that becomes unreadable
    keeps the last good token (OPA then decides whether it is still valid)
    and says so in the log."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._token = _read(path)  # at startup a bad file is fatal
        self._stamp = self._stat()
        self._next_check = time.monotonic() + _RECHECK_SECONDS

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def __call__(self) -> str:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _RECHECK_SECONDS
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self._token = _read(self._path)
                    self._stamp = stamp
                    log.info("OPA token file %s changed; new token in use", self._path)
                except TokenFileError as exc:
                    log.warning("%s; keeping the previous token", exc)
        return self._token
