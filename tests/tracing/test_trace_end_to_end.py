"""One trace through real Envoy (its OpenTelemetry tracer), the sidecar and real OPA
(its distributed_tracing), all exporting to the same OTLP receiver."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import free_port, local_addresses, start_envoy, start_sidecar
from deploy.render import render_envoy
from tests.check_requests import check_request
from tests.e2e.conftest import E2E_POLICIES
from tests.e2e.stack import wait_for
from tests.fault_opa import FaultOpa
from tests.fixtures.opa import opa_binary, start_opa
from tests.tracing.otlp_receiver import OtlpReceiver, ReceivedSpan

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1 Span.SpanKind


def traced_envoy(config_yaml: str, collector: str) -> str:
    """The shipped configuration with Envoy's OpenTelemetry tracer sending to `collector`."""
    config = yaml.safe_load(config_yaml)
    [listener] = config["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["tracing"] = {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": "otlp"}, "timeout": "1s"},
                "service_name": "envoy",
            },
        }
    }
    host, _, port = collector.rpartition(":")
    config["static_resources"]["clusters"].append(
        {
            "name": "otlp",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {
                "cluster_name": "otlp",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {"socket_address": {"address": host, "port_value": int(port)}}
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def traced_stack(monkeypatch: pytest.MonkeyPatch, otlp: OtlpReceiver) -> Iterator[tuple[Any, Any]]:
    """Envoy -> sidecar -> real OPA, each exporting spans to `otlp`."""
    workdir = Path(tempfile.mkdtemp(prefix="trace-"))
    opa_config = workdir / "opa-config.yaml"
    opa_config.write_text(
        yaml.safe_dump(
            {
                "distributed_tracing": {
                    "type": "grpc",
                    "address": otlp.address,
                    "sample_percentage": 100,
                    "service_name": "opa",
                }
            }
        )
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://{otlp.address}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        opa = start_opa([E2E_POLICIES], real_opa_options=["--config-file", str(opa_config)])
        cleanup.callback(opa.stop)
        upstream = cleanup.enter_context(EchoUpstream())
        sidecar = start_sidecar(opa.url, workdir)
        cleanup.callback(sidecar.stop)
        config = render_envoy(local_addresses(upstream.addr, sidecar.grpc_addr))
        envoy = start_envoy(traced_envoy(config, otlp.address), workdir / "envoy")
        cleanup.callback(envoy.stop)
        yield envoy, sidecar


def _one(spans: list[ReceivedSpan], service: str, kind: int) -> ReceivedSpan | None:
    found = [s for s in spans if s.service == service and s.kind == kind]
    return found[0] if len(found) == 1 else None


@pytest.mark.skipif(opa_binary() is None, reason="needs the real OPA (make opa) for its distributed_tracing")
def test_envoy_sidecar_and_opa_spans_form_one_correctly_parented_trace(
    monkeypatch: pytest.MonkeyPatch, otlp: OtlpReceiver
) -> None:
    with traced_stack(monkeypatch, otlp) as (envoy, sidecar):
        assert envoy.request("GET", "/allowed/trace").status == 200
        decision = wait_for(lambda: next(iter(sidecar.decisions()), None))
        trace_id = decision["trace_id"]

        def complete() -> list[ReceivedSpan] | None:
            spans = otlp.trace(trace_id)
            services = {s.service for s in spans}
            return spans if {"envoy", "opa-sidecar", "opa"} <= services and len(spans) >= 5 else None

        spans = wait_for(complete, timeout=20.0)

    by_id = {s.span_id: s for s in spans}
    check = _one(spans, "opa-sidecar", SERVER)
    opa_request = _one(spans, "opa-sidecar", CLIENT)
    assert check is not None and opa_request is not None, spans
    # The sidecar's check is a child of the span Envoy opened for its ext_authz call,
    # itself inside Envoy's span of the client's request.
    envoy_call = by_id[check.parent_span_id]
    assert envoy_call.service == "envoy" and envoy_call.kind == CLIENT, envoy_call
    envoy_request = by_id[envoy_call.parent_span_id]
    assert envoy_request.service == "envoy" and envoy_request.parent_span_id == "", envoy_request
    # The OPA request is the check's child, and OPA's evaluation the OPA request's.
    assert opa_request.parent_span_id == check.span_id
    opa_spans = [s for s in spans if s.service == "opa"]
    assert any(s.parent_span_id == opa_request.span_id for s in opa_spans), opa_spans
    # What the check span says, and what it never carries.
    assert check.attributes["opa_sidecar.decision_id"] == decision["decision_id"]
    assert check.attributes["opa_sidecar.outcome"] == "allow"
    assert check.attributes["opa_sidecar.decision_path"] == "envoy/authz/allow"
    assert check.attributes["opa_sidecar.opa_status_code"] == 200
    assert check.status_code != 2
    assert opa_request.attributes["http.response.status_code"] == 200
    assert not any("header" in key or "input" in key for key in check.attributes)
    # The decision log line joins the trace at the sidecar's span.
    assert decision["span_id"] == check.span_id


@pytest.mark.skipif(opa_binary() is None, reason="needs the real OPA (make opa) for its distributed_tracing")
def test_policy_deny_is_not_an_error_span(monkeypatch: pytest.MonkeyPatch, otlp: OtlpReceiver) -> None:
    with traced_stack(monkeypatch, otlp) as (envoy, sidecar):
        assert envoy.request("GET", "/limited/x").status != 200
        decision = wait_for(lambda: next(iter(sidecar.decisions()), None))
        assert decision["reason"] == "policy_denied"

        def check_span() -> ReceivedSpan | None:
            return _one(otlp.trace(decision["trace_id"]), "opa-sidecar", SERVER)

        check = wait_for(check_span, timeout=10.0)
    assert check.attributes["opa_sidecar.outcome"] == "deny"
    assert check.attributes["opa_sidecar.deny_reason"] == "policy_denied"
    assert check.status_code != 2


def test_each_worker_exports_its_own_spans(
    monkeypatch: pytest.MonkeyPatch, fault_opa: FaultOpa, otlp: OtlpReceiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://{otlp.address}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    workdir = Path(tempfile.mkdtemp(prefix="trace-"))
    tcp = ["--http-addr", f"127.0.0.1:{free_port()}", "--probe-addr", f"127.0.0.1:{free_port()}"]
    sidecar = start_sidecar(fault_opa.url, workdir, extra_args=[*tcp, "--workers", "2"])
    try:
        # A connection is served by one worker: new connections until both have exported.
        def from_both() -> set[Any] | None:
            with grpc.insecure_channel(sidecar.grpc_addr) as channel:
                call = channel.unary_unary(
                    "/envoy.service.auth.v3.Authorization/Check",
                    request_serializer=None,
                    response_deserializer=None,
                )
                assert call(check_request().SerializeToString(), timeout=2)
            pids = {s.resource.get("process.pid") for s in otlp.spans if s.service == "opa-sidecar"}
            return pids if len(pids) == 2 else None

        pids = wait_for(from_both, timeout=20.0)
    finally:
        sidecar.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert sidecar.process.pid not in pids  # the workers export, not their parent
