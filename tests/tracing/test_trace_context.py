"""Reading the caller's trace context: W3C, B3 single and B3 multi; anything malformed is ignored."""

from __future__ import annotations

import pytest

from sidecar.trace_context import TraceContext, extract, from_b3_single, from_pairs, from_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_w3c_traceparent_and_tracestate() -> None:
    found = from_traceparent(f"00-{TRACE}-{SPAN}-01", "congo=t61rcWkgMzE")
    assert found == TraceContext(TRACE, SPAN, True, "congo=t61rcWkgMzE")
    assert found.traceparent() == f"00-{TRACE}-{SPAN}-01"


def test_w3c_unsampled_flag_is_kept() -> None:
    found = from_traceparent(f"00-{TRACE}-{SPAN}-00")
    assert found is not None and not found.sampled
    assert found.traceparent().endswith("-00")


def test_w3c_future_version_may_append_fields() -> None:
    assert from_traceparent(f"01-{TRACE}-{SPAN}-01-extra") == TraceContext(TRACE, SPAN, True)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{TRACE}-{SPAN}",  # no flags
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE}-{SPAN}-01",  # the forbidden version
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE.upper()}-{SPAN}-01",  # W3C ids are lowercase
        f"00-{TRACE[:-1]}g-{SPAN}-01",
        f"00-{TRACE}-{SPAN[:-2]}-01",
    ],
)
def test_malformed_traceparent_is_ignored(value: str) -> None:
    assert from_traceparent(value) is None


@pytest.mark.parametrize("tracestate", ["x" * 513, "a=\x01b", "é=1"])
def test_unusable_tracestate_is_dropped_but_the_context_kept(tracestate: str) -> None:
    found = from_traceparent(f"00-{TRACE}-{SPAN}-01", tracestate)
    assert found == TraceContext(TRACE, SPAN, True, "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{TRACE}-{SPAN}-1", TraceContext(TRACE, SPAN, True)),
        (f"{TRACE}-{SPAN}-0", TraceContext(TRACE, SPAN, False)),
        (f"{TRACE}-{SPAN}-d", TraceContext(TRACE, SPAN, True)),  # debug implies sampled
        (f"{TRACE}-{SPAN}", TraceContext(TRACE, SPAN, False)),  # deferred
        (f"{TRACE}-{SPAN}-1-{'1' * 16}", TraceContext(TRACE, SPAN, True)),  # with the parent's span id
        (f"a3ce929d0e0e4736-{SPAN}-1", TraceContext("0" * 16 + "a3ce929d0e0e4736", SPAN, True)),  # 64-bit
    ],
)
def test_b3_single_header(value: str, expected: TraceContext) -> None:
    assert from_b3_single(value) == expected


@pytest.mark.parametrize(
    "value", ["0", "1", "d", f"{TRACE}-{SPAN}-x", f"{TRACE}-bad", f"{TRACE}-{SPAN}-1-2-3"]
)
def test_b3_single_without_a_usable_context(value: str) -> None:
    assert from_b3_single(value) is None


def test_b3_multi_headers() -> None:
    headers = {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"}
    assert extract(headers.get) == TraceContext(TRACE, SPAN, True)
    headers["x-b3-sampled"] = "0"
    assert extract(headers.get) == TraceContext(TRACE, SPAN, False)
    del headers["x-b3-sampled"]
    headers["x-b3-flags"] = "1"  # debug
    assert extract(headers.get) == TraceContext(TRACE, SPAN, True)
    assert extract({"x-b3-traceid": TRACE}.get) is None


def test_w3c_wins_over_b3_and_a_bad_w3c_falls_back() -> None:
    other = "1" * 32
    headers = {"traceparent": f"00-{TRACE}-{SPAN}-01", "b3": f"{other}-{SPAN}-1"}
    assert extract(headers.get) == TraceContext(TRACE, SPAN, True)
    headers["traceparent"] = "00-broken"
    assert extract(headers.get) == TraceContext(other, SPAN, True)


def test_grpc_metadata_pairs() -> None:
    pairs: list[tuple[str, str | bytes]] = [
        ("user-agent", "envoy"),
        ("traceparent", f"00-{TRACE}-{SPAN}-01"),
        ("x-bin", b"\x00"),
    ]
    assert from_pairs(pairs) == TraceContext(TRACE, SPAN, True)
    assert from_pairs([("user-agent", "envoy")]) is None
    assert from_pairs([("traceparent", b"binary")]) is None


def test_a_context_that_cannot_be_read_leaves_the_check_untraced() -> None:
    from sidecar import tracing

    def broken() -> TraceContext | None:
        raise AttributeError("no metadata")

    assert tracing.begin_check(broken, "check") is None
    assert tracing.opa_call() is None
