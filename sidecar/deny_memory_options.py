"""Parsers for the deny memory's settings (sidecar/config.py lists the flags)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from sidecar.verdict import DenyReason

MODES = ("observe", "hold", "freeze")
DEFAULT_REASONS = "policy_denied,undefined,invalid_result,missing_signal"
# Denies made once the input document exists, so that the caller is known.
# The memory's own reasons are left out: a held deny must not renew the window
# it was held by, or a retrying caller would never be asked again.
REMEMBERABLE = (
    DenyReason.POLICY_DENIED,
    DenyReason.UNDEFINED,
    DenyReason.INVALID_RESULT,
    DenyReason.MISSING_SIGNAL,
    DenyReason.OPA_TIMEOUT,
    DenyReason.OPA_UNREACHABLE,
    DenyReason.OPA_HTTP_STATUS,
    DenyReason.OPA_BAD_RESPONSE,
)
MIN_KEY_BYTES = 16


def parse_window(raw: str) -> float:
    """Seconds a deny is remembered; 0 turns the memory off."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:  # also refuses nan and inf
        raise ValueError("must be from 0 (off) to 86400 seconds")
    return value


def parse_reasons(raw: Sequence[str]) -> frozenset[DenyReason]:
    names = [item.strip() for item in raw if item.strip()]
    if not names:
        raise ValueError("names no reason")
    allowed = {reason.value: reason for reason in REMEMBERABLE}
    for name in names:
        if name not in allowed:
            raise ValueError(f"{name!r} is not one of {', '.join(allowed)}")
    return frozenset(allowed[name] for name in names)


def parse_store_url(raw: str) -> str | None:
    """redis://host:port/db, rediss://host:port/db (TLS) or unix:///path.sock ("" means none)."""
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError("has no host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError("the path must be a database number")
    elif parts.scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            raise ValueError("a unix socket needs an absolute path: unix:///path/to.sock")
    else:
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def key_file(raw: str) -> str | None:
    """A file holding the HMAC key for callers and credentials ("" means none:
    a random key per process). Checked now; Settings keeps the path, not the key."""
    if not raw:
        return None
    load_key(raw)
    return raw


def load_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"holds fewer than {MIN_KEY_BYTES} bytes")
    return key
