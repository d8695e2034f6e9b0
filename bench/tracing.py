"""Tracing's cost per check: off, off with a caller's trace context (propagation
only), on with every check sampled, and on with 1% sampled.

    python -m bench.tracing [--checks N] [--rounds R]

Checks run one after another through the gRPC face's handler (CheckService.check,
with the metadata Envoy's tracer sends), the pipeline, the OPA client's request
hook and the recorder with its decision log, against an OPA client whose exchange
answers at once: the figures are the sidecar's own time per check, without OPA
or the network. With export on, spans go over OTLP/gRPC to a receiver in another
process; CPU per check counts the export thread too. The variants alternate in
rounds, so a busy machine weighs on all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc
import uvloop

from sidecar import tracing
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar.authorizer import Authorizer
from sidecar.decision_log import DecisionLog
from sidecar.envoy.service import SPAN_NAME, CheckService
from sidecar.metrics import Metrics
from sidecar.opa.client import OpaClient
from sidecar.opa.http1 import Endpoint
from sidecar.recording import Recorder
from sidecar.trace_context import from_pairs

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ENVOY_METADATA = (("user-agent", "envoy/1.40"), ("x-envoy-expected-rq-timeout-ms", "250"))


class InstantOpa(OpaClient):
    """The real client up to the wire: its tracing hook runs, the exchange answers at once."""

    async def _exchange(self, body: bytes, deadline: float, call: Any) -> dict[str, Any]:
        if call is not None:
            call.status = 200
        return {"result": True}


class Context:
    """What the handler reads of a gRPC call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float:
        return 0.25

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def add_done_callback(self, callback: Any) -> None:
        callback(self)  # the answer is taken at once


def request() -> bytes:
    message = CheckRequest()
    http = message.attributes.request.http
    http.method, http.path, http.host, http.scheme = "GET", "/orders/7", "app.example", "http"
    http.headers["user-agent"] = "curl/8"
    return message.SerializeToString()


async def measure(checks: int, metadata: tuple[tuple[str, str], ...]) -> tuple[list[float], float]:
    opa = InstantOpa(Endpoint("127.0.0.1", 1), decision_path="envoy/authz/allow")
    authorizer = Authorizer(opa, opa_timeout=1.0, max_inflight=10)
    decisions = DecisionLog("envoy/authz/allow", io.BytesIO())
    service = CheckService(authorizer, Recorder(decisions, Metrics()))
    body, context = request(), cast(grpc.aio.ServicerContext[bytes, bytes], Context(metadata))
    for _ in range(200):  # warm up
        await service.check(body, context)
    seconds = []
    cpu = time.process_time()
    for _ in range(checks):
        started = time.perf_counter()
        await service.check(body, context)
        seconds.append(time.perf_counter() - started)
    tracing.flush(10)  # the export thread's CPU belongs to these checks
    cpu = time.process_time() - cpu
    decisions.close()
    return seconds, cpu / checks


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    code = (
        "import sys, time\n"
        "from tests.tracing.otlp_receiver import OtlpReceiver\n"
        "r = OtlpReceiver().start(); print(r.address, flush=True); sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.kill()
        process.wait()


def variants(collector: str, checks: int) -> dict[str, tuple[dict[str, str], tuple[tuple[str, str], ...]]]:
    export = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://{collector}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        # A back-to-back loop makes spans faster than any real load: queue them all,
        # so the export's whole CPU is counted rather than dropped.
        "OTEL_BSP_MAX_QUEUE_SIZE": str(2 * checks + 1000),
    }
    traced = (*ENVOY_METADATA, ("traceparent", TRACEPARENT))
    return {
        "off, no trace context": ({}, ENVOY_METADATA),
        "off, Envoy sends traceparent (propagation only)": ({}, traced),
        "on, every check sampled": (export, traced),
        "on, 1% sampled (traceidratio 0.01)": (
            export | {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
            traced,
        ),
    }


def hooks_off_ns(calls: int) -> float:
    """What tracing adds to a check with export off and no trace context: the
    three hooks (way in, OPA request, recorder) alone, in nanoseconds."""
    metadata = ENVOY_METADATA
    started = time.perf_counter_ns()
    for _ in range(calls):
        tracing.begin_check(lambda: from_pairs(metadata), SPAN_NAME)
        tracing.opa_call()
        tracing.take()
    return (time.perf_counter_ns() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    results: dict[str, list[tuple[list[float], float]]] = {}
    hooks = [hooks_off_ns(200_000) for _ in range(args.rounds)]
    with receiver() as collector:
        for _ in range(args.rounds):
            for label, (env, metadata) in variants(collector, args.checks).items():
                dropped: list[int] = []
                os.environ.update(env)
                tracing.configure("envoy/authz/allow", dropped.append)
                results.setdefault(label, []).append(uvloop.run(measure(args.checks, metadata)))
                tracing.shutdown()
                for name in env:
                    del os.environ[name]
                assert not dropped, f"{label}: {sum(dropped)} spans dropped"
    print("| tracing | mean µs/check | p50 µs | p99 µs | CPU µs/check |")
    print("|---|---|---|---|---|")
    for label, runs in results.items():
        means = [statistics.fmean(s) * 1e6 for s, _ in runs]
        p50s = [sorted(s)[len(s) // 2] * 1e6 for s, _ in runs]
        p99s = [sorted(s)[int(len(s) * 0.99)] * 1e6 for s, _ in runs]
        cpus = [c * 1e6 for _, c in runs]
        print(f"| {label} | {_span(means)} | {_span(p50s)} | {_span(p99s)} | {_span(cpus)} |")
    print(f"\nthe tracing hooks alone, export off, no trace context: {_span(hooks)} ns per check")


def _span(values: list[float]) -> str:
    return f"{min(values):.1f} to {max(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


if __name__ == "__main__":
    main()
