"""Describing an exception for the log without its message.

Exception messages can quote the data that caused them (a header, a token, a
body); the type and where it was raised are enough to find the bug.
"""

from __future__ import annotations

import traceback


def describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames[-4:]))
    return f"{type(exc).__name__} at {where or 'unknown location'}"
