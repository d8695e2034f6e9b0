"""Tracing: carry the caller's trace through the check to OPA, and export spans.

Propagation always happens: a check that arrives with a trace context (W3C or
B3) sends W3C ``traceparent``/``tracestate`` to OPA and writes ``trace_id`` and
``span_id`` in its decision log line. Spans (one server span per check, one
client span for the OPA request) exist only when the standard OTEL_*
variables turn export on; with none of them set, a check without a trace
context costs one lookup and one branch, and no span object is made.

The check's trace lives in a context variable set by the way in, so the
pipeline between the way in and the OPA client carries nothing for it.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType

from opentelemetry import trace as otel
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from sidecar.config import ConfigError
from sidecar.span_export import BoundedSpanExport
from sidecar.trace_context import TraceContext
from sidecar.verdict import Allow, DenyReason, Verdict

# Denies that say the check itself failed (the service, OPA or the pipeline),
# as opposed to a policy's or a request's "no": their spans are errors.
FAILURES = frozenset(
    {
        DenyReason.OPA_TIMEOUT,
        DenyReason.DEADLINE_EXCEEDED,
        DenyReason.OPA_UNREACHABLE,
        DenyReason.OPA_HTTP_STATUS,
        DenyReason.OPA_BAD_RESPONSE,
        DenyReason.INVALID_RESULT,
        DenyReason.UNDEFINED,
        DenyReason.OVERLOADED,
        DenyReason.SHUTTING_DOWN,
        DenyReason.INTERNAL_ERROR,
        DenyReason.DENY_MEMORY_UNAVAILABLE,
    }
)

log = logging.getLogger("sidecar.tracing")
_EXPORT_ON_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class _Spans:
    """The SDK side, present only while export is on."""

    def __init__(self, provider: TracerProvider, decision_path: str) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("opa-sidecar")
        self.decision_path = decision_path


_spans: _Spans | None = None
_current: contextvars.ContextVar[CheckTrace | None] = contextvars.ContextVar("check_trace", default=None)


def _parent(caller: TraceContext | None) -> Context:
    if caller is None:
        return Context()
    remote = otel.SpanContext(
        trace_id=int(caller.trace_id, 16),
        span_id=int(caller.span_id, 16),
        is_remote=True,
        trace_flags=otel.TraceFlags(otel.TraceFlags.SAMPLED if caller.sampled else 0),
        trace_state=otel.TraceState.from_header([caller.tracestate]) if caller.tracestate else None,
    )
    return otel.set_span_in_context(otel.NonRecordingSpan(remote), Context())


def _as_context(span: otel.Span) -> TraceContext:
    sc = span.get_span_context()
    return TraceContext(
        f"{sc.trace_id:032x}", f"{sc.span_id:016x}", sc.trace_flags.sampled, sc.trace_state.to_header()
    )


class OpaCall:
    """The OPA request of a check: the headers to send and, with export on, its client span."""

    __slots__ = ("_check", "_span", "headers", "status")

    def __init__(self, check: CheckTrace) -> None:
        self._check = check
        self.status = 0  # OPA's HTTP status, once it answered
        self._span: otel.Span | None = None
        context = check.caller
        if check.span is not None and not check.span.is_recording():
            # Sampled out: OPA is told the check's span (and that it is not sampled),
            # with no second span made for nothing.
            context = _as_context(check.span)
        elif _spans is not None and check.span is not None:
            self._span = _spans.tracer.start_span(
                "POST /v1/data",
                otel.set_span_in_context(check.span, Context()),
                kind=SpanKind.CLIENT,
                attributes={"http.request.method": "POST"},
            )
            context = _as_context(self._span)
        head = b""
        if context is not None:
            head = b"traceparent: " + context.traceparent().encode("ascii") + b"\r\n"
            if context.tracestate:
                head += b"tracestate: " + context.tracestate.encode("ascii") + b"\r\n"
        self.headers = head

    def __enter__(self) -> OpaCall:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._check.opa_status = self.status
        span = self._span
        if span is None:
            return
        try:
            self._end(span, exc)
        except Exception as error:
            log.debug("OPA request span not ended: %s", type(error).__name__)

    def _end(self, span: otel.Span, exc: BaseException | None) -> None:
        if self.status:
            span.set_attribute("http.response.status_code", self.status)
        if exc is not None or self.status != 200:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__ if exc else None))
        span.end()


class CheckTrace:
    """One check's place in a trace."""

    __slots__ = ("caller", "opa_status", "span")

    def __init__(self, caller: TraceContext | None, span: otel.Span | None) -> None:
        self.caller = caller
        self.span = span
        self.opa_status = 0

    def log_ids(self) -> tuple[str, str]:
        """``trace_id`` and ``span_id`` for the decision log: the sidecar's span
        when there is one, else the caller's."""
        if self.span is not None:
            context = self.span.get_span_context()
            return f"{context.trace_id:032x}", f"{context.span_id:016x}"
        assert self.caller is not None
        return self.caller.trace_id, self.caller.span_id

    def finish(self, decision_id: str, verdict: Verdict) -> None:
        try:
            self._end(decision_id, verdict)
        except Exception as exc:  # the answer is already decided; the span only describes it
            log.debug("check span not ended: %s", type(exc).__name__)

    def _end(self, decision_id: str, verdict: Verdict) -> None:
        span = self.span
        if span is None or _spans is None:
            return
        span.set_attribute("opa_sidecar.decision_id", decision_id)
        span.set_attribute("opa_sidecar.decision_path", _spans.decision_path)
        if isinstance(verdict, Allow):
            span.set_attribute("opa_sidecar.outcome", "allow")
        else:
            span.set_attribute("opa_sidecar.outcome", "deny")
            span.set_attribute("opa_sidecar.deny_reason", verdict.reason.value)
            if verdict.reason in FAILURES:
                span.set_status(Status(StatusCode.ERROR, verdict.reason.value))
        if self.opa_status:
            span.set_attribute("opa_sidecar.opa_status_code", self.opa_status)
        span.end()


def begin_check(read_caller: Callable[[], TraceContext | None], span_name: str) -> CheckTrace | None:
    """Called by each way in as a check starts: the check's trace, also made current.
    Never raises: a check whose context cannot be read or whose span cannot be
    made goes on without them."""
    try:
        caller = read_caller()
    except Exception as exc:
        log.debug("trace context not read: %s", type(exc).__name__)
        caller = None
    trace = None if caller is None else CheckTrace(caller, None)
    if _spans is not None:
        try:
            trace = CheckTrace(
                caller, _spans.tracer.start_span(span_name, _parent(caller), kind=SpanKind.SERVER)
            )
        except Exception as exc:
            log.debug("check span not started: %s", type(exc).__name__)
    _current.set(trace)
    return trace


def take() -> CheckTrace | None:
    """The check's trace, once: recording it ends the check's part in the trace."""
    trace = _current.get()
    if trace is not None:
        _current.set(None)
    return trace


def opa_call() -> OpaCall | None:
    """The OPA request's trace headers (and span), or None without a trace."""
    check = _current.get()
    if check is None:
        return None
    try:
        return OpaCall(check)
    except Exception as exc:  # the OPA request goes without its trace, never without its answer
        log.debug("OPA request span not started: %s", type(exc).__name__)
        return None


def _int_setting(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw[:40]!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}: must be above 0")
    return value


def export_wanted(env: Mapping[str, str]) -> bool:
    """On when OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        if exporter == "none":
            return False
        if exporter != "otlp":
            raise ConfigError(f"OTEL_TRACES_EXPORTER: {exporter[:40]!r} is not supported (otlp or none)")
        return True
    return any(env.get(name, "").strip() for name in _EXPORT_ON_ENDPOINTS)


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    timeout: float | None = None  # None: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT
    if "OTEL_BSP_EXPORT_TIMEOUT" in env and not (
        env.get("OTEL_EXPORTER_OTLP_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
    ):
        timeout = _int_setting(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000) / 1000
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(timeout=timeout)
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter: SpanExporter = HttpExporter(timeout=timeout)
        return exporter
    raise ConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol[:40]!r} is not supported (grpc or http/protobuf)"
    )


def configure(decision_path: str, dropped: Callable[[int], None]) -> bool:
    """Turn span export on or off from the OTEL_* variables of the environment
    (the SDK and the exporters read theirs there too; each --workers process
    exports its own). Raises ConfigError for a value it cannot use."""
    global _spans
    shutdown()
    env = os.environ
    if not export_wanted(env):
        return False
    processor = BoundedSpanExport(
        _exporter(env),
        dropped,
        max_queue=_int_setting(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048),
        max_batch=_int_setting(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
        delay_seconds=_int_setting(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
    )
    # process.pid tells the --workers processes apart; OTEL_RESOURCE_ATTRIBUTES may set it too.
    resource = Resource({"process.pid": os.getpid()}).merge(Resource.create())
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "opa-sidecar"}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(processor)
    _spans = _Spans(provider, decision_path)
    return True


def flush(seconds: float = 5.0) -> bool:
    return _spans is None or _spans.provider.force_flush(int(seconds * 1000))


def shutdown() -> None:
    """Export what is queued (bounded) and turn export off."""
    global _spans
    spans, _spans = _spans, None
    if spans is not None:
        spans.provider.shutdown()
