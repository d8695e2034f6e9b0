"""The trace context a caller sends with a check, read from W3C Trace Context
(``traceparent``, ``tracestate``) or B3 (the single ``b3`` header or the
``x-b3-*`` headers), and written back as W3C for OPA.

A malformed context is ignored, never an error: tracing must not change a verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# W3C caps tracestate at 32 members; 512 bytes is what a vendor must keep.
MAX_TRACESTATE = 512

# Every header this module reads: a way in collects these and no others.
TRACE_HEADERS = frozenset(
    {"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"}
)


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 lowercase hex digits, not all zero
    span_id: str  # 16 lowercase hex digits, not all zero: the caller's span
    sampled: bool
    tracestate: str = ""

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


Lookup = Callable[[str], "str | None"]


def _hex(value: str, length: int) -> bool:
    return len(value) == length and _HEX.issuperset(value)


def _ids(trace_id: str, span_id: str) -> tuple[str, str] | None:
    trace_id, span_id = trace_id.lower(), span_id.lower()
    if len(trace_id) == 16:  # B3 allows 64-bit trace ids; W3C wants 128
        trace_id = "0" * 16 + trace_id
    if not (_hex(trace_id, 32) and _hex(span_id, 16)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id


def _tracestate(value: str | None) -> str:
    if not value or len(value) > MAX_TRACESTATE or not value.isascii() or not value.isprintable():
        return ""
    return value


def from_traceparent(value: str, tracestate: str | None = None) -> TraceContext | None:
    """W3C: ``version-traceid-parentid-flags``; a future version may append fields."""
    parts = value.strip().split("-")
    if len(parts) < 4 or not _hex(parts[0], 2) or parts[0] == "ff":
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    # W3C ids are lowercase; an uppercase digit makes the header invalid.
    if not (_hex(parts[1], 32) and _hex(parts[2], 16) and _hex(parts[3], 2)):
        return None
    ids = _ids(parts[1], parts[2])
    if ids is None:
        return None
    return TraceContext(ids[0], ids[1], bool(int(parts[3], 16) & 1), _tracestate(tracestate))


def from_b3_single(value: str) -> TraceContext | None:
    """``traceid-spanid[-sampling[-parentspanid]]``; ``0``, ``1`` or ``d`` alone carry no context."""
    parts = value.strip().split("-")
    if len(parts) < 2 or len(parts) > 4:
        return None
    ids = _ids(parts[0], parts[1])
    if ids is None:
        return None
    sampling = parts[2] if len(parts) > 2 else ""
    if sampling not in ("", "0", "1", "d"):
        return None
    return TraceContext(ids[0], ids[1], sampling in ("1", "d"))


def from_b3_multi(lookup: Lookup) -> TraceContext | None:
    trace_id, span_id = lookup("x-b3-traceid"), lookup("x-b3-spanid")
    if trace_id is None or span_id is None:
        return None
    ids = _ids(trace_id.strip(), span_id.strip())
    if ids is None:
        return None
    sampled = (lookup("x-b3-sampled") or "").strip().lower() in ("1", "true")
    debug = (lookup("x-b3-flags") or "").strip() == "1"
    return TraceContext(ids[0], ids[1], sampled or debug)


def extract(lookup: Lookup) -> TraceContext | None:
    """W3C first, then B3 single, then B3 multi: the first valid one wins.

    ``lookup`` returns a header's value by its lowercase name, or None.
    """
    traceparent = lookup("traceparent")
    if traceparent is not None:
        context = from_traceparent(traceparent, lookup("tracestate"))
        if context is not None:
            return context
    b3 = lookup("b3")
    if b3 is not None:
        context = from_b3_single(b3)
        if context is not None:
            return context
    return from_b3_multi(lookup)


def from_pairs(pairs: Iterable[tuple[str, str | bytes]]) -> TraceContext | None:
    """From gRPC metadata: (key, value) pairs with lowercase keys; binary values are skipped."""
    found: dict[str, str] | None = None
    for key, value in pairs:
        if key in TRACE_HEADERS and isinstance(value, str):
            if found is None:
                found = {}
            found.setdefault(key, value)
    if found is None:
        return None
    return extract(found.get)
