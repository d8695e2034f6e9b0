"""Overload: measure the sidecar's capacity, then offer it three times as much.

    python -m tests.adversarial.overload [--max-inflight 16] [--factor 3] [--seconds 5] [--hostile]

Capacity is what --max-inflight makes it when OPA is the bottleneck: the fault OPA takes
100 ms over every answer (a busy OPA), so at most max_inflight / 0.1 s checks a second can
be allowed. It is measured, not computed: h2load straight at the sidecar's gRPC port,
closed loop, max_inflight calls at once, one pre-encoded CheckRequest with
`grpc-timeout: 250m` (Envoy's timeout). Then h2load offers `factor` times that rate for a
few seconds, open loop, while a probe client sends more checks and reads every answer.

Every check must be answered within its deadline, the excess denied at once with reason
`overloaded`, the admitted checks still allowed at about the measured capacity, and the
sidecar's memory bounded. An answer later than the deadline is acceptable only while the
machine starved the sidecar of CPU (process_monitor), as in the chaos runs.

With --hostile, the hostile clients of the chaos run (tests.adversarial.chaos_hostile)
take turns during the overload, one window each: the flood of the largest requests with
slow connections on the sidecar's HTTP listeners, then rapid resets and unread answers on
its gRPC port. Their own checks are left out of the figures, which count the load's alone;
the sidecar's descriptors and memory are sampled again once everything has stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc

from deploy.local_stack import start_sidecar
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar.envoy.response import OK
from tests.adversarial.chaos_faults import Window, run_schedule
from tests.adversarial.chaos_hostile import HostileClients
from tests.adversarial.chaos_report import STARVED_MS
from tests.adversarial.process_monitor import Sampler, connections_to, cpu_waited_ms, sample
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa

DEADLINE_MS: Final = 250
CHECK_METHOD: Final = "/envoy.service.auth.v3.Authorization/Check"
RSS_GROWTH_LIMIT_MIB: Final = 30
CLIENTS: Final = 4  # h2load connections
ATTACK_GAP_S: Final = 0.5  # between hostile-client windows
SETTLE_S: Final = 2.0  # after the attacks, before the last sample of fds and memory
_SUMMARY = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_COUNTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
)


@dataclass(frozen=True)
class OverloadConfig:
    max_inflight: int = 16
    opa_latency: float = 0.1
    factor: float = 3.0
    seconds: float = 5.0
    probe_rate: float = 20.0
    hostile: bool = False


@dataclass
class H2Run:
    rate: float
    started: int
    done: int
    failed: int
    rows: list[tuple[float, int, float]] = field(default_factory=list)  # (sent, status, ms), monotonic


def _h2load(
    target: str,
    frame: Path,
    *,
    streams: int,
    seconds: float,
    rps: int | None,
    log: Path,
    started: Callable[[int], None] = lambda _pid: None,
) -> H2Run:
    command = [
        "h2load", "-t", "1", "-c", str(CLIENTS), "-m", str(streams), "-d", str(frame),
        "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f"grpc-timeout: {DEADLINE_MS}m",
        "-D", f"{seconds:g}", f"--log-file={log}",
    ]  # fmt: skip
    if rps is not None:
        command += ["--rps", str(rps)]
    epoch_to_monotonic = time.monotonic() - time.time()
    with subprocess.Popen(
        [*command, f"http://{target}{CHECK_METHOD}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        started(process.pid)
        out, _ = process.communicate(timeout=seconds + 30)
    summary, counts = _SUMMARY.search(out), _COUNTS.search(out)
    if summary is None or counts is None:
        raise RuntimeError(f"cannot read h2load's output:\n{out[-2000:]}")
    run = H2Run(float(summary[1]), int(counts[2]), int(counts[3]), int(counts[5]) + int(counts[6]))
    for line in log.read_text().splitlines():
        start_us, status, duration_us = line.split("\t")[:3]
        run.rows.append((int(start_us) / 1e6 + epoch_to_monotonic, int(status), int(duration_us) / 1000))
    return run


class Probe:
    """Checks at a steady rate from a gRPC client that reads every answer."""

    def __init__(self, target: str, wire: bytes, rate: float) -> None:
        self.target, self.wire, self.rate = target, wire, rate
        self.calls: list[tuple[float, float, str]] = []  # (sent, done, "allow" | deny reason | "grpc:CODE")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="overload-probe", daemon=True
        )

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            check = channel.unary_unary(CHECK_METHOD, request_serializer=None, response_deserializer=None)
            pending = set()
            while not self._stop.is_set():
                pending.add(asyncio.create_task(self._one(check)))
                await asyncio.sleep(1 / self.rate)
            await asyncio.gather(*pending)

    async def _one(self, check: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
        sent = time.monotonic()
        try:
            response = CheckResponse.FromString(await check(self.wire, timeout=DEADLINE_MS / 1000))
            outcome = "allow" if response.status.code == OK else str(response.dynamic_metadata["deny_reason"])
        except grpc.aio.AioRpcError as exc:
            outcome = f"grpc:{exc.code().name}"
        self.calls.append((sent, time.monotonic(), outcome))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def run(config: OverloadConfig) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="overload-"))
    with contextlib.ExitStack() as cleanup, FaultOpa() as fault:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        fault.set(Behaviour.delayed(config.opa_latency))
        sidecar = start_sidecar(fault.url, workdir, extra_args=["--max-inflight", str(config.max_inflight)])
        cleanup.callback(sidecar.stop)
        wire = check_request("GET", "/orders").SerializeToString()
        frame = workdir / "check.grpc"
        frame.write_bytes(b"\0" + len(wire).to_bytes(4, "big") + wire)
        pid = sidecar.process.pid

        capacity = _h2load(
            sidecar.grpc_addr,
            frame,
            streams=config.max_inflight // CLIENTS,
            seconds=3,
            rps=None,
            log=workdir / "c.log",
        )
        decided_before = len(sidecar.decisions())
        baseline = sample(pid)
        opa_port = int(fault.url.rpartition(":")[2])
        opa_before = connections_to(pid, opa_port)
        h2load_pid = [0]  # /proc/0 does not exist: not sampled until h2load runs
        sampler = Sampler(
            {"sidecar": lambda: pid, "h2load": lambda: h2load_pid[0], "probe": os.getpid}, memory=["sidecar"]
        )
        sampler.start()
        probe = Probe(sidecar.grpc_addr, wire, config.probe_rate)
        probe.start()
        cleanup.callback(probe.stop)
        cleanup.callback(sampler.stop)
        per_client = math.ceil(config.factor * capacity.rate / CLIENTS)
        hostile = HostileClients("overload", sidecar.grpc_addr, sidecar.http_addr, sidecar.probe_addr)
        windows: list[Window] = []
        attacks = threading.Thread(
            target=run_schedule,
            args=(hostile, _attack_steps(hostile, config), ATTACK_GAP_S, lambda: False, windows),
        )
        if config.hostile:
            attacks.start()
        overload = _h2load(
            sidecar.grpc_addr,
            frame,
            streams=128,
            seconds=config.seconds,
            rps=per_client,
            log=workdir / "o.log",
        )
        probe.stop()
        sampler.stop()
        settled: dict[str, Any] = {}
        if config.hostile:
            attacks.join()
            time.sleep(SETTLE_S)
            end = sample(pid)
            settled = {
                "rss_end_mib": round(end.rss_kib / 1024, 1),
                "fds": [baseline.fds, sampler.peak["sidecar"].fds, end.fds],
                "opa_connections": [opa_before, connections_to(pid, opa_port)],
            }
        decisions = [d for d in sidecar.decisions()[decided_before:] if _of_the_load(d)]

    cpu = sampler.cpu_wait["sidecar"]
    late: list[tuple[float, float]] = [
        (sent, sent + ms / 1000) for sent, status, ms in overload.rows if ms >= DEADLINE_MS or status != 200
    ]
    h2load_late = len(late)
    late += [
        (sent, done)
        for sent, done, outcome in probe.calls
        if outcome.startswith("grpc:") or done - sent >= DEADLINE_MS / 1000
    ]
    starved = sum(cpu_waited_ms(cpu, sent, done) >= STARVED_MS for sent, done in late)
    late_in: Counter[str] = Counter()
    for sent, _ in late:
        late_in[next((w.kind for w in windows if w.start <= sent <= w.end), "outside the attacks")] += 1
    reasons = Counter(d.get("reason", "allow") for d in decisions)
    answered = len(overload.rows) + len(probe.calls)
    return {
        "max_inflight": config.max_inflight,
        "opa_latency_s": config.opa_latency,
        "capacity_per_s": round(capacity.rate),
        "offered_per_s": round(answered / config.seconds),
        "factor": round(answered / config.seconds / capacity.rate, 2) if capacity.rate else None,
        "checks": answered,
        "h2load": {"started": overload.started, "done": overload.done, "failed": overload.failed},
        "probe_outcomes": dict(Counter(outcome for _, _, outcome in probe.calls)),
        "sidecar_reasons": dict(reasons.most_common()),
        "decisions": len(decisions),
        "allowed_per_s": round(reasons["allow"] / config.seconds),
        "max_latency_ms": round(
            max([ms for _, _, ms in overload.rows] + [(d - s) * 1000 for s, d, _ in probe.calls]), 1
        ),
        "late_or_failed": len(late),
        "late_h2load_by_status": dict(
            Counter(status for _, status, ms in overload.rows if ms >= DEADLINE_MS or status != 200)
        ),
        "late_probe": len(late) - h2load_late,
        "late_while_starved": starved,
        "late_by_attack": dict(late_in),
        "rss_mib": [round(baseline.rss_kib / 1024, 1), round(sampler.peak["sidecar"].rss_kib / 1024, 1)],
        **settled,
        "cpu_wait": sampler.summary(),
        "hostile": {kind: dict(counts) for kind, counts in hostile.activity.items()},
        "hostile_windows_s": [round(w.end - w.start, 1) for w in windows],
    }


def _attack_steps(hostile: HostileClients, config: OverloadConfig) -> list[tuple[str, float]]:
    """Each attack the sidecar's listeners can take, in turn, filling the overload's time."""
    kinds = hostile.kinds()
    each = max(1.0, (config.seconds - ATTACK_GAP_S * (len(kinds) + 1)) / len(kinds))
    return [(kind, each) for kind in kinds]


def _of_the_load(decision: dict[str, Any]) -> bool:
    """Whether a decision may be on one of the load's checks (GET /orders over gRPC) rather
    than an attacker's: those name /hostile (gRPC) or are POSTs (HTTP), and a request the
    sidecar cannot read (bad_request) is the flood's. A line without the request (an
    overloaded or cut-off check) cannot be told apart and is counted, whoever sent it."""
    if "path" not in decision:
        return decision.get("reason") != "bad_request"
    return decision["path"] == "/orders" and decision.get("method") == "GET"


def violations(rep: dict[str, Any]) -> list[str]:
    found = []
    if rep["late_or_failed"] > rep["late_while_starved"]:
        unexcused = rep["late_or_failed"] - rep["late_while_starved"]
        found.append(f"{unexcused} checks late or failed while the sidecar had CPU")
    if rep["h2load"]["failed"]:
        found.append(f"h2load: {rep['h2load']}")
    if rep["factor"] is None or rep["factor"] < 2.5:
        found.append(f"offered only {rep['factor']} times the capacity")
    reasons = rep["sidecar_reasons"]
    unexpected = set(reasons) - {"allow", "overloaded", "opa_timeout", "deadline_exceeded"}
    if unexpected:
        found.append(f"unexpected outcomes: { {r: reasons[r] for r in unexpected} }")
    if reasons.get("overloaded", 0) < rep["decisions"] / 2:
        found.append(f"the excess was not denied as overloaded: {reasons}")
    if rep["allowed_per_s"] < 0.6 * rep["capacity_per_s"]:
        allowed, capacity = rep["allowed_per_s"], rep["capacity_per_s"]
        found.append(f"allows collapsed under overload: {allowed}/s for a capacity of {capacity}/s")
    # A late answer may have been cut off by its deadline before it was logged.
    if rep["decisions"] < rep["checks"] - rep["late_or_failed"]:
        found.append(f"{rep['checks']} checks answered in time but only {rep['decisions']} decided")
    baseline, peak = rep["rss_mib"]
    if peak - baseline > RSS_GROWTH_LIMIT_MIB:
        found.append(f"RSS grew from {baseline} to {peak} MiB")
    if "fds" in rep:  # sampled again once the hostile clients had stopped
        if rep["rss_end_mib"] - baseline > RSS_GROWTH_LIMIT_MIB:
            found.append(f"RSS did not come back: {baseline} MiB before, {rep['rss_end_mib']} MiB at the end")
        (fds_before, _, fds_end), (opa_before, opa_end) = rep["fds"], rep["opa_connections"]
        # Idle keep-alive connections to OPA stay pooled (see chaos_report.violations).
        if fds_end - opa_end > fds_before - opa_before:
            found.append(f"{fds_end} fds at the end ({opa_end} to OPA), {fds_before} before ({opa_before})")
    for kind, counts in rep["hostile"].items():
        if not any(n for what, n in counts.items() if what.startswith("/") or what == "streams"):
            found.append(f"{kind}: the attackers got nowhere ({counts})")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.adversarial.overload", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--max-inflight", type=int, default=OverloadConfig.max_inflight)
    parser.add_argument("--factor", type=float, default=OverloadConfig.factor)
    parser.add_argument("--seconds", type=float, default=OverloadConfig.seconds)
    parser.add_argument(
        "--hostile", action="store_true", help="the hostile clients take turns during the overload"
    )
    args = parser.parse_args(argv)
    config = OverloadConfig(
        max_inflight=args.max_inflight, factor=args.factor, seconds=args.seconds, hostile=args.hostile
    )
    rep = run(config)
    problems = violations(rep)
    print(json.dumps({**rep, "violations": problems}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
