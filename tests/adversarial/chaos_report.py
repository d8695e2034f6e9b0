"""What a chaos run observed, counted from every response, and the invariants it must hold.

Each 200 is classified against two independent records: OPA's (which checks it answered
with a yes) and the upstream's (the policy's marker header it received). A correct allow
has both, for that very check. A 200 the sidecar never allowed (no marker, no allow in
its decision log) is a failure-mode allow: a fail-open Envoy let the request through
because the sidecar's answer did not arrive within Envoy's 250 ms. Any other 200 is a
wrongful allow by the sidecar.

A deadline miss (a 503 from the fail-closed Envoy, a failure-mode allow from the fail-open
one) is expected only when the machine did not let the sidecar or its Envoy run: one of
their threads waited for a CPU for STARVED_MS or more while the check was pending
(/proc/PID/task/TID/schedstat). Likewise a recovery slower than RECOVERY_LIMIT is excused
only if OPA or the sidecar was so held back. Anything else is a violation, as is every
wrongful allow.
"""

from __future__ import annotations

import bisect
import inspect
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sidecar.opa.http1 import ConnectionPool
from tests.adversarial.chaos_faults import Window
from tests.adversarial.loadgen import NO_RESPONSE, TIMED_OUT, Result
from tests.adversarial.process_monitor import CpuWait, ProcessSample, cpu_waited_ms

RECOVERY_LIMIT: Final = 1.0  # seconds from a fault lifted to the first correct allow
RSS_GROWTH_LIMIT_KIB: Final = 20 * 1024  # see docs/reliability.md, "Leaks"
# The sidecar's slack between its OPA budget (150 ms) and Envoy's timeout (250 ms) is
# 100 ms; waiting half of that for a CPU while a check is pending can use it up.
STARVED_MS: Final = 50.0
HOSTILE: Final = "hostile-"  # the kind of every hostile-client window (chaos_hostile)
HTTP_FLOOD: Final = HOSTILE + "http-flood"
# Idle keep-alive connections the sidecar keeps to OPA, at most.
OPA_POOL_BOUND: Final[int] = inspect.signature(ConnectionPool).parameters["max_idle"].default


@dataclass
class RunData:
    results: Sequence[Result]
    targets: Sequence[tuple[str, str]]  # (side, Envoy mode) of each load target
    windows: Sequence[Window]
    yes: dict[str, set[str]]  # side -> markers OPA answered with a yes
    decisions: dict[str, dict[int, tuple[str, str, float]]]  # side -> check -> (outcome, reason, ms)
    envoy_counters: dict[str, dict[str, int]]  # "side/mode" -> Envoy's ext_authz counters
    baseline: dict[str, ProcessSample]  # side -> the sidecar after warm-up
    peak: dict[str, ProcessSample]
    end: dict[str, ProcessSample]  # after the load stopped and connections settled
    cpu_wait: dict[str, list[CpuWait]]  # sidecars (by side), Envoys ("side/mode"), OPAs: sampled
    opa_of: dict[str, str]  # side -> the name of its OPA in cpu_wait
    sidecar_alive: dict[str, bool]
    sidecar_log: dict[str, tuple[int, int]]  # side -> (answers gRPC could not deliver, other tracebacks)
    answers: Counter[str]  # fault OPA answers by kind
    concurrency: dict[str, int]  # side -> load connections through its Envoys
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    # side -> its sidecar's connections to OPA, after warm-up and at the end (part of its fds)
    opa_connections: dict[str, tuple[int, int]] = field(default_factory=dict)
    attacked: set[str] = field(default_factory=set)  # sides that had hostile-client windows


def _classify(r: Result, yes: set[str], decision: tuple[str, str, float] | None) -> str:
    if r.status == 200:
        marker = str(r.seq)
        said_yes = r.allow_path and marker in yes
        if said_yes and r.echoed == marker and r.echoed_path == f"/allow/{marker}":
            return "correct_allow"
        # No marker: Envoy passed the request without the sidecar's OK, which always
        # carries it. Fine only if the sidecar did not allow, or allowed on a yes but too
        # late; Envoy's failure_mode_allowed counter must agree (see violations).
        sidecar_allowed = decision is not None and decision[0] == "allow"
        if r.echoed is None and (said_yes or not sidecar_allowed):
            return "failure_mode_allow"
        return "wrongful_allow"
    if r.status == 403:
        return "deny"
    if r.status == 503:
        return "unavailable"
    if r.status in (NO_RESPONSE, TIMED_OUT):
        return "no_response"
    return "other_status"


def _recovery(window: Window, allows: Sequence[tuple[float, float]]) -> float | None:
    """Seconds from the end of `window` to the first correct allow of a check sent after it
    (`allows`: (sent, done) sorted by sent)."""
    best: float | None = None
    for sent, done in allows[bisect.bisect_left(allows, (window.end, 0.0)) :]:
        if best is not None and sent > best:
            break  # sent after the best answer arrived: cannot beat it
        best = done if best is None else min(best, done)
    return None if best is None else best - window.end


def _percentile(ordered: Sequence[float], share: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1) if ordered else 0.0


def report(data: RunData) -> dict[str, Any]:
    by_target: dict[str, Counter[str]] = defaultdict(Counter)
    outcomes: Counter[str] = Counter()
    wrongful: list[dict[str, Any]] = []
    allows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sent_by_side: dict[str, list[tuple[float, int]]] = defaultdict(list)
    misses: Counter[str] = Counter()
    for r in data.results:
        side, mode = data.targets[r.target]
        kind = _classify(r, data.yes[side], data.decisions[side].get(r.seq))
        outcomes[kind] += 1
        by_target[f"{side}/{mode}"][kind] += 1
        sent_by_side[side].append((r.sent, r.seq))
        if kind == "correct_allow":
            allows[side].append((r.sent, r.done))
            continue
        starved = None
        if kind in ("unavailable", "failure_mode_allow"):
            # The sidecar answers, its Envoy reads the answer: either one held back will do.
            waited = max(
                cpu_waited_ms(data.cpu_wait[name], r.sent, r.done) for name in (side, f"{side}/{mode}")
            )
            starved = waited >= STARVED_MS
            misses["while starved" if starved else "unexplained"] += 1
        problem = kind in ("wrongful_allow", "no_response", "other_status") or starved is False
        if problem and len(wrongful) < 20:
            wrongful.append({"seq": r.seq, "envoy": f"{side}/{mode}", "kind": kind, "echoed": r.echoed})

    for side_allows in allows.values():
        side_allows.sort()
    for checks_sent in sent_by_side.values():
        checks_sent.sort()
    faults: dict[str, dict[str, Any]] = defaultdict(dict)
    recovery: dict[str, dict[str, float | None]] = defaultdict(dict)
    slow_recoveries: list[dict[str, Any]] = []
    for side, kind in sorted({(w.side, w.kind) for w in data.windows}):
        windows = [w for w in data.windows if (w.side, w.kind) == (side, kind)]
        sent = sent_by_side[side]
        checks = [
            seq
            for w in windows
            for _, seq in sent[bisect.bisect_left(sent, (w.start, 0)) : bisect.bisect_left(sent, (w.end, 0))]
        ]
        reasons = Counter(data.decisions[side].get(seq, ("unlogged", "unlogged", 0.0))[1] for seq in checks)
        times = [_recovery(w, allows[side]) for w in windows]
        for w, t in zip(windows, times, strict=True):
            if t is None or t > RECOVERY_LIMIT:
                # Excused only if OPA or the sidecar could not run while allows were awaited.
                until = w.end + (t if t is not None else RECOVERY_LIMIT)
                waited = max(
                    cpu_waited_ms(data.cpu_wait[name], w.end, until) for name in (side, data.opa_of[side])
                )
                slow_recoveries.append(
                    {"side": side, "kind": kind, "seconds": t, "starved": waited >= STARVED_MS}
                )
        faults[side][kind] = {
            "windows": len(windows),
            "seconds": round(sum(w.end - w.start for w in windows), 1),
            "checks_during": len(checks),
            "sidecar_reasons": dict(reasons.most_common()),
        }
        known = [t for t in times if t is not None]
        recovery[side][kind] = None if len(known) < len(times) else round(max(known), 3)
    all_recoveries = [t for kinds in recovery.values() for t in kinds.values()]
    known_recoveries = [t for t in all_recoveries if t is not None]
    reasons_total = Counter(reason for side in data.decisions.values() for _, reason, _ in side.values())
    sidecar_ms = sorted(ms for side in data.decisions.values() for _, _, ms in side.values())
    client_ms = sorted((r.done - r.sent) * 1000 for r in data.results if r.status > 0)
    return {
        "checks": len(data.results),
        "seconds": round(data.seconds, 1),
        "checks_per_second": round(len(data.results) / data.seconds) if data.seconds else 0,
        "outcomes": dict(outcomes),
        "client_visible_wrongful_allows": outcomes["wrongful_allow"] + outcomes["failure_mode_allow"],
        "deadline_misses": dict(misses),
        "problem_examples": wrongful,
        "by_envoy": {name: dict(counts) for name, counts in sorted(by_target.items())},
        "sidecar_reasons": dict(reasons_total.most_common()),
        "latency_ms": {
            "sidecar_p99": _percentile(sidecar_ms, 0.99),
            "sidecar_max": _percentile(sidecar_ms, 1.0),
            "client_p99": _percentile(client_ms, 0.99),
            "client_max": _percentile(client_ms, 1.0),
        },
        "faults": dict(faults),
        "fault_opa_answers": dict(data.answers.most_common()),
        "recovery_seconds": dict(recovery),
        "recovery_max_seconds": None if None in all_recoveries else max(known_recoveries, default=0.0),
        "recovery_median_seconds": statistics.median(known_recoveries or [0.0]),
        "slow_recoveries": slow_recoveries,
        "sidecars": {
            side: {
                "alive": data.sidecar_alive[side],
                "undelivered_answers": data.sidecar_log[side][0],
                "tracebacks": data.sidecar_log[side][1],
                "fds": [data.baseline[side].fds, data.peak[side].fds, data.end[side].fds],
                "rss_mib": [
                    round(s.rss_kib / 1024, 1) for s in (data.baseline[side], data.peak[side], data.end[side])
                ],
                "load_connections": data.concurrency[side],
                "opa_connections": list(data.opa_connections.get(side, (0, 0))),
                "attacked": side in data.attacked,
            }
            for side in sorted(data.baseline)
        },
        "envoy_counters": data.envoy_counters,
        **data.extra,
    }


def violations(rep: dict[str, Any]) -> list[str]:
    """Every invariant the run broke, in words; empty when it held."""
    found = []
    outcomes = rep["outcomes"]
    examples = rep["problem_examples"][:5]
    for kind in ("wrongful_allow", "no_response", "other_status"):
        if outcomes.get(kind, 0):
            found.append(f"{outcomes[kind]} {kind.replace('_', ' ')} (examples: {examples})")
    if rep["deadline_misses"].get("unexplained"):
        unexplained = rep["deadline_misses"]["unexplained"]
        found.append(f"{unexplained} deadline misses while the sidecar had CPU (examples: {examples})")
    if not outcomes.get("correct_allow"):
        found.append("no correct allow at all: the run proves nothing")
    if rep.get("fault_opa_most_requests_for_one_check", 0) > 1:
        found.append(f"OPA was asked {rep['fault_opa_most_requests_for_one_check']} times for one check")
    if rep["sidecar_reasons"].get("internal_error"):
        found.append(f"{rep['sidecar_reasons']['internal_error']} checks denied with internal_error")
    unexcused = [slow for slow in rep["slow_recoveries"] if not slow["starved"]]
    if unexcused:
        found.append(f"allows did not resume within {RECOVERY_LIMIT} s: {unexcused}")
    for side, s in rep["sidecars"].items():
        if not s["alive"] or s["tracebacks"]:
            found.append(f"{side} sidecar: alive={s['alive']}, {s['tracebacks']} tracebacks in its log")
        # Each answer gRPC could not deliver is a deadline miss of that side, unless hostile
        # clients were there: their reset and unread streams leave undelivered answers too.
        side_misses = sum(
            counts.get("unavailable", 0) + counts.get("failure_mode_allow", 0)
            for envoy, counts in rep["by_envoy"].items()
            if envoy.startswith(f"{side}/")
        )
        if not s["attacked"] and s["undelivered_answers"] > side_misses:
            found.append(
                f"{side} sidecar: {s['undelivered_answers']} answers undelivered, {side_misses} misses"
            )
        baseline_fds, _, end_fds = s["fds"]
        opa_start, opa_end = s["opa_connections"]
        if end_fds - opa_end > baseline_fds - opa_start + s["load_connections"]:
            found.append(
                f"{side} sidecar: {end_fds} fds at the end, {baseline_fds} at the start "
                f"(of which connections to OPA: {opa_end}, {opa_start})"
            )
        # Idle keep-alive connections to OPA stay pooled: at most one per check that was in
        # flight at once, which hostile clients on the gRPC port can raise to the pool's bound.
        pooled = OPA_POOL_BOUND if s["attacked"] else s["load_connections"]
        if opa_end > pooled:
            found.append(f"{side} sidecar: {opa_end} connections to OPA at the end, more than {pooled}")
        baseline_rss, _, end_rss = s["rss_mib"]
        if (end_rss - baseline_rss) * 1024 > RSS_GROWTH_LIMIT_KIB:
            found.append(f"{side} sidecar: RSS {baseline_rss} MiB -> {end_rss} MiB")
    for envoy, counters in rep["envoy_counters"].items():
        seen = rep["by_envoy"].get(envoy, {})
        missed = seen.get("unavailable", 0) + seen.get("failure_mode_allow", 0)
        if counters.get("error", 0) != missed:
            found.append(
                f"{envoy}: Envoy counted {counters.get('error')} errors, the load saw {missed} misses"
            )
        if counters.get("failure_mode_allowed", 0) != seen.get("failure_mode_allow", 0):
            found.append(f"{envoy}: Envoy allowed {counters} on failure, the load saw {seen}")
    found += _idle_attacks(rep.get("hostile", {}))
    for side, kinds in rep["faults"].items():
        for kind, effect in kinds.items():
            if kind.startswith(HOSTILE):
                continue  # the load's checks are answered as usual: see _idle_attacks
            denied = sum(n for reason, n in effect["sidecar_reasons"].items() if reason != "policy_denied")
            if kind != "mixed" and not denied:
                found.append(f"{side}: the {kind} fault denied nothing: it was not injected")
    return found


def _idle_attacks(activity: dict[str, dict[str, int]]) -> list[str]:
    """The hostile-client windows whose attackers got nowhere: no flood request answered,
    no gRPC stream opened."""
    idle = []
    for kind, counts in activity.items():
        if kind == HTTP_FLOOD:
            answered = sum(
                n for what, n in counts.items() if what.startswith("/") and not what.endswith(" 0")
            )
        else:
            answered = counts.get("streams", 0)
        if not answered:
            idle.append(f"{kind}: the attackers got nowhere ({counts}): it was not injected")
    return idle


def summary(rep: dict[str, Any], problems: Iterable[str]) -> str:
    lines = [
        f"{rep['checks']} checks in {rep['seconds']} s ({rep['checks_per_second']}/s): {rep['outcomes']}",
        f"client-visible wrongful allows: {rep['client_visible_wrongful_allows']}; "
        f"deadline misses: {rep['deadline_misses']}",
        f"sidecar reasons: {rep['sidecar_reasons']}",
        f"recovery (s): max {rep['recovery_max_seconds']}, median {rep['recovery_median_seconds']}, "
        f"over {RECOVERY_LIMIT} s: {rep['slow_recoveries']}",
        f"latency (ms): {rep['latency_ms']}",
        f"CPU wait (longest thread, per quarter second): {rep.get('cpu_wait')}",
    ]
    for side, kinds in rep["faults"].items():
        for kind, effect in kinds.items():
            lines.append(
                f"  {side} {kind}: {effect['windows']} windows, {effect['seconds']} s, "
                f"{effect['checks_during']} checks, recovery {rep['recovery_seconds'][side][kind]} s, "
                f"{effect['sidecar_reasons']}"
            )
    for side, s in rep["sidecars"].items():
        lines.append(
            f"  {side} sidecar: fds {s['fds']} ({s['opa_connections']} to OPA), "
            f"RSS MiB {s['rss_mib']} (baseline, peak, end), "
            f"answers gRPC could not deliver {s['undelivered_answers']}, other tracebacks {s['tracebacks']}"
        )
    for envoy, counters in rep["envoy_counters"].items():
        lines.append(f"  {envoy}: {counters}")
    problems = list(problems)
    lines.append("invariants held" if not problems else "VIOLATIONS:\n  " + "\n  ".join(problems))
    return "\n".join(lines)
