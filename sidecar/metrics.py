"""Prometheus metrics, one registry per running sidecar.

Label values come from closed sets (outcome, deny reason), so the number of
series is fixed; the children are created up front so every series exists at
0 from the start and the hot path does no label lookups.

With --workers N the values live in prometheus-client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the supervising parent) and every worker's
/metrics serves the sum over all workers.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from sidecar.verdict import Allow, DenyReason, Verdict


def _outcome(verdict: Verdict) -> str:
    return "allow" if isinstance(verdict, Allow) else "deny"


_CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # what /metrics serves
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            registry = CollectorRegistry()  # the metrics write to files; keep them out of /metrics
        else:
            registry = self.registry
        checks = Counter(
            "opa_sidecar_checks",
            "Checks answered, by outcome (allow, deny) and deny reason (empty for allow).",
            ["outcome", "reason"],
            registry=registry,
        )
        self._allowed = checks.labels("allow", "")
        self._denied = {reason: checks.labels("deny", reason.value) for reason in DenyReason}
        latency = Histogram(
            "opa_sidecar_check_duration_seconds",
            "Time from receiving a check to having its answer, by outcome.",
            ["outcome"],
            buckets=_CHECK_BUCKETS,
            registry=registry,
        )
        self._allow_latency = latency.labels("allow")
        self._deny_latency = latency.labels("deny")
        self.opa_latency = Histogram(
            "opa_sidecar_opa_request_duration_seconds",
            "Time of each OPA Data API request, whatever its result.",
            buckets=_CHECK_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge(
            "opa_sidecar_checks_in_flight",
            "Checks being answered right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.opa_reachable = Gauge(
            "opa_sidecar_opa_reachable",
            "1 when the latest OPA request or health probe got an HTTP answer, else 0.",
            registry=registry,
            multiprocess_mode="livemostrecent",
        )

        shadow = Counter(
            "opa_sidecar_shadow_checks",
            "Shadow evaluations by enforced and shadow outcome; the off-diagonal pairs are disagreements.",
            ["enforced", "shadow"],
            registry=registry,
        )
        self._shadow = {(e, s): shadow.labels(e, s) for e in ("allow", "deny") for s in ("allow", "deny")}

        after_deny = Counter(
            "opa_sidecar_checks_after_deny",
            "Checks by a caller within its deny memory window, by how they follow the deny (retry, "
            "other_action, credential_switch) and whether the memory denied them (held), in every mode.",
            ["kind", "held"],
            registry=registry,
        )
        self._after_deny = {
            (kind, held): after_deny.labels(kind, held)
            for kind in ("retry", "other_action", "credential_switch")
            for held in ("true", "false")
        }
        self._denies_remembered = Counter(
            "opa_sidecar_deny_memory_remembered",
            "Denies that opened or renewed a caller's deny memory window.",
            registry=registry,
        )
        self._deny_memory_evicted = Counter(
            "opa_sidecar_deny_memory_evicted",
            "Live entries the in-process deny memory dropped for room (those callers are asked again).",
            registry=registry,
        )
        store_errors = Counter(
            "opa_sidecar_deny_memory_store_errors",
            "Deny memory store calls that failed or ran out of time, by operation (read, write).",
            ["operation"],
            registry=registry,
        )
        self._store_errors = {op: store_errors.labels(op) for op in ("read", "write")}

        materials = ("grpc_listener", "opa_client")  # as sidecar.tls names them
        reloads = Counter(
            "opa_sidecar_tls_reloads",
            "Changes of TLS files seen, by material (grpc_listener, opa_client) and whether they "
            "loaded (loaded) or were refused, the old material staying in use (rejected).",
            ["material", "result"],
            registry=registry,
        )
        self._tls_reloads = {
            (m, loaded): reloads.labels(m, "loaded" if loaded else "rejected")
            for m in materials
            for loaded in (True, False)
        }
        rejected = Gauge(
            "opa_sidecar_tls_files_rejected",
            "1 while a material's files on disk are refused and older material is in use, else 0.",
            ["material"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._tls_rejected = {m: rejected.labels(m) for m in materials}
        for gauge in self._tls_rejected.values():
            gauge.set(0)
        unanswered = Counter(
            "opa_sidecar_http_connections_unanswered",
            "Connections an HTTP listener closed at once, unanswered, by listener (authz, probe): "
            "every connection it may hold was answering a request.",
            ["listener"],
            registry=registry,
        )
        self._http_unanswered = {name: unanswered.labels(name) for name in ("authz", "probe")}
        self._spans_dropped = Counter(
            "opa_sidecar_trace_spans_dropped",
            "Spans not exported: the export queue was full, or the exporter failed or refused them.",
            registry=registry,
        )

    def observe_tls_reload(self, material: str, loaded: bool) -> None:
        """Called from the TLS file poller's thread (prometheus-client is thread-safe)."""
        self._tls_reloads[material, loaded].inc()
        self._tls_rejected[material].set(0 if loaded else 1)

    def observe_http_unanswered(self, listener: str) -> None:
        self._http_unanswered[listener].inc()

    def observe_spans_dropped(self, count: int) -> None:
        self._spans_dropped.inc(count)

    def observe_after_deny(self, kind: str, *, held: bool) -> None:
        self._after_deny[kind, "true" if held else "false"].inc()

    def observe_deny_remembered(self, evicted: int) -> None:
        self._denies_remembered.inc()
        if evicted:
            self._deny_memory_evicted.inc(evicted)

    def observe_deny_store_error(self, operation: str) -> None:
        self._store_errors[operation].inc()

    def observe_shadow(self, enforced: Verdict, shadow: Verdict) -> None:
        self._shadow[_outcome(enforced), _outcome(shadow)].inc()

    def observe_check(self, verdict: Verdict, seconds: float) -> None:
        if isinstance(verdict, Allow):
            self._allowed.inc()
            self._allow_latency.observe(seconds)
        else:
            self._denied[verdict.reason].inc()
            self._deny_latency.observe(seconds)

    def observe_opa(self, seconds: float, reached: bool) -> None:
        self.opa_latency.observe(seconds)
        self.opa_reachable.set(1 if reached else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
