"""Decision ids: random (version 4) UUIDs, as the OPA-Envoy plugin's are.

``uuid.uuid4()`` asks the kernel for 16 random bytes per id: one getrandom
call per check. The same kernel CSPRNG is read here 4 KiB at a time, one
call per 256 ids. A child made by fork() drops the bytes it inherited, so
no two processes hand out the same ids (``--workers`` starts fresh
interpreters, which share nothing).
"""

from __future__ import annotations

import os

_BLOCK = 16 * 256
_pool = b""
_next = _BLOCK


def _forget() -> None:
    global _pool, _next
    _pool, _next = b"", _BLOCK


os.register_at_fork(after_in_child=_forget)


def new_decision_id() -> str:
    """A fresh ``xxxxxxxx-xxxx-4xxx-Yxxx-xxxxxxxxxxxx`` (Y one of 8, 9, a, b)."""
    global _pool, _next
    if _next >= _BLOCK:
        _pool, _next = os.urandom(_BLOCK), 0
    raw = int.from_bytes(_pool[_next : _next + 16], "big")
    _next += 16
    # RFC 9562: version 4 in bits 48-51, variant 10 in bits 64-65.
    raw = (raw & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{raw:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
