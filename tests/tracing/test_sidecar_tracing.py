"""The sidecar's side of a trace, in process: the context it reads from each way in,
what it sends OPA, the decision log's join keys, its spans, and an exporter that is
down, slow or refusing never holding or changing a check."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator

import aiohttp
import pytest

from sidecar import tracing
from sidecar.config import ConfigError
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.tracing.otlp_receiver import OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ENVOY_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{ENVOY_SPAN}-01"
W3C = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]")


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield


def export_to(monkeypatch: pytest.MonkeyPatch, endpoint: str, **bsp: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", bsp.get("delay", "20"))
    for name, value in bsp.items():
        if name != "delay":
            monkeypatch.setenv(f"OTEL_BSP_{name.upper()}", value)


def dropped(handle: SidecarHandle) -> float:
    text = handle.sidecar.metrics.exposition().decode()
    found = re.search(r"^opa_sidecar_trace_spans_dropped_total (\S+)$", text, re.M)
    assert found is not None, text
    return float(found.group(1))


async def test_export_off_still_sends_the_callers_context_to_opa_and_logs_it(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url) as handle:
        assert not tracing.export_wanted({})
        await handle.stub.Check(
            check_request(path="/a"),
            timeout=2,
            metadata=(("traceparent", TRACEPARENT), ("tracestate", "k=v")),
        )
        await handle.check(check_request(path="/b"))
        first, second = handle.decisions()
    traced, untraced = fault_opa.requests
    # OPA's span becomes a child of Envoy's span: the context is passed on as it came.
    assert traced.header("traceparent") == TRACEPARENT
    assert traced.header("tracestate") == "k=v"
    assert (first["trace_id"], first["span_id"]) == (TRACE, ENVOY_SPAN)
    assert first["outcome"] == "allow"
    assert untraced.header("traceparent") is None
    assert "trace_id" not in second and "span_id" not in second


async def test_http_mode_and_json_api_read_b3(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url) as handle, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{handle.sidecar.http.port}"
        async with session.get(f"{base}/ext_authz/x", headers={"b3": f"{TRACE}-{ENVOY_SPAN}-1"}) as resp:
            assert resp.status == 200
        multi = {"x-b3-traceid": TRACE, "x-b3-spanid": ENVOY_SPAN, "x-b3-sampled": "0"}
        async with session.post(f"{base}/v1/check", json={"a": 1}, headers=multi) as resp:
            assert resp.status == 200
        lines = handle.decisions()
    assert [r.header("traceparent") for r in fault_opa.requests] == [TRACEPARENT, TRACEPARENT[:-1] + "0"]
    assert [(e["trace_id"], e["span_id"]) for e in lines] == [(TRACE, ENVOY_SPAN)] * 2


async def test_spans_of_a_check_and_its_opa_request(
    monkeypatch: pytest.MonkeyPatch, fault_opa: FaultOpa, otlp: OtlpReceiver
) -> None:
    export_to(monkeypatch, f"http://{otlp.address}")
    async with running_sidecar(fault_opa.url) as handle:
        await handle.stub.Check(check_request(), timeout=2, metadata=(("traceparent", TRACEPARENT),))
        fault_opa.set(Behaviour.answer(500, b'{"code": "internal_error"}'))
        await handle.check(check_request())  # no caller context: a trace of its own
        assert tracing.flush(5)
        allowed, failed = handle.decisions()
    spans = otlp.spans
    [check] = [s for s in spans if s.trace_id == TRACE and s.kind == 2]
    [opa_request] = [s for s in spans if s.trace_id == TRACE and s.kind == 3]
    assert check.parent_span_id == ENVOY_SPAN and opa_request.parent_span_id == check.span_id
    assert check.service == "opa-sidecar"
    # OPA is told the OPA request's span, so OPA's spans are its children.
    sent = W3C.fullmatch(fault_opa.requests[0].header("traceparent") or "")
    assert sent is not None and sent.groups() == (TRACE, opa_request.span_id)
    assert (allowed["trace_id"], allowed["span_id"]) == (TRACE, check.span_id)
    # An OPA failure is an error span, with OPA's status on both spans.
    [failed_check] = [s for s in spans if s.trace_id == failed["trace_id"] and s.kind == 2]
    [failed_request] = [s for s in spans if s.trace_id == failed["trace_id"] and s.kind == 3]
    assert failed_check.parent_span_id == "" and failed_check.status_code == 2
    assert failed_check.attributes["opa_sidecar.deny_reason"] == "opa_http_status"
    assert failed_check.attributes["opa_sidecar.opa_status_code"] == 500
    assert failed_request.status_code == 2
    assert failed_request.attributes["http.response.status_code"] == 500


async def _timed_checks(handle: SidecarHandle, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        response = await handle.stub.Check(
            check_request(), timeout=2, metadata=(("traceparent", TRACEPARENT),)
        )
        seconds.append(time.perf_counter() - started)
        assert response.status.code == 0  # the allow stays an allow
    return seconds


@pytest.mark.parametrize("fault", ["down", "refusing", "slow"])
async def test_an_exporter_in_trouble_never_holds_or_changes_a_check(
    monkeypatch: pytest.MonkeyPatch, fault_opa: FaultOpa, otlp: OtlpReceiver, fault: str
) -> None:
    if fault == "down":
        otlp.stop()  # nothing listens on its port any more
    otlp.refuse = fault == "refusing"
    otlp.delay = 3.0 if fault == "slow" else 0.0
    export_to(monkeypatch, f"http://{otlp.address}", max_queue_size="8", max_export_batch_size="4")
    # OPA's budget well above a starved moment of a shared machine (the default
    # 0.15 s once denied one of these checks as opa_timeout, OPA being in this
    # process) and well below the exporter's wait of whole seconds, which a
    # check held by it would still show: as a timeout deny and in its time.
    async with running_sidecar(fault_opa.url, opa_timeout=1.0) as handle:
        seconds = await _timed_checks(handle, 60)
        # 120 spans into a queue of 8 behind an exporter that cannot take them: most are dropped.
        deadline = time.monotonic() + 10
        while dropped(handle) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert dropped(handle) >= 60
        assert len(handle.decisions()) == 60
    # The exporter waits whole seconds; a check that waited for it would show it.
    assert max(seconds) < 0.5, sorted(seconds)[-5:]


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "authz"}, False),  # tunes, does not turn on
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_which_variables_turn_export_on(env: dict[str, str], on: bool) -> None:
    assert tracing.export_wanted(env) is on


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
    ],
)
def test_a_value_it_cannot_use_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        tracing.configure("envoy/authz/allow", lambda _n: None)
