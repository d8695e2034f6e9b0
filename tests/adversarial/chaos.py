"""Chaos under load: real Envoys, real sidecar processes and OPAs, a load generator that
counts every response, and OPA faults in known windows.

    python -m tests.adversarial.chaos                      # one pass of every fault (~40 s)
    python -m tests.adversarial.chaos --checks 100000      # cycle the faults until 100,000 checks
    python -m tests.adversarial.chaos --checks 100000 --report chaos.json
    python -m tests.adversarial.chaos --checks 35000 --hostile 5   # hostile clients too (~3 min)

Two sides run at once, each a sidecar behind two Envoys (the shipped fail-closed
configuration, and the same with `failure_mode_allow: true`):

- process faults: the sidecar asks OPA (the real `opa run --server` when there is one,
  else the stand-in on the OPA engine), which is killed and restarted, paused
  (SIGSTOP/SIGCONT) and slowed (a stop/continue duty cycle);
- answer faults: the sidecar asks the fault OPA, which answers garbage, 5xx, undefined,
  redirects, truncated or reset answers, invalid results, ambiguous JSON, slow or never.

With --hostile SECONDS, the process side's schedule also has hostile-client windows
(tests.adversarial.chaos_hostile) of that length, between its OPA faults: a flood of the
largest requests its HTTP listeners take with slow connections held on them, HTTP/2 rapid
resets on its gRPC port, and gRPC streams whose answers are never read.

Exit status 0 when every invariant held (see chaos_report.violations), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.adversarial.chaos_faults import (
    ANSWER_SCHEDULE,
    PROCESS_SCHEDULE,
    AnswerChooser,
    AnswerFaults,
    Injector,
    ProcessFaults,
    Window,
    run_schedule,
)
from tests.adversarial.chaos_hostile import HostileClients
from tests.adversarial.chaos_report import HOSTILE, RunData, report, summary, violations
from tests.adversarial.chaos_stack import (
    ENVOY_MODES,
    EchoProcess,
    GuardedSidecar,
    RecordingOpa,
    start_guarded,
)
from tests.adversarial.loadgen import LoadGenerator, LoadThread
from tests.adversarial.process_monitor import Sampler, connections_to, sample
from tests.e2e.stack import EXT_AUTHZ_STATS
from tests.fault_opa import FaultOpa

PROCESS_SIDE = "process-faults"
ANSWER_SIDE = "answer-faults"


@dataclass(frozen=True)
class ChaosConfig:
    checks: int | None = None  # None: one pass of each schedule
    connections: int = 6  # per Envoy
    rate: float = 200.0  # checks per second, over the four Envoys
    gap: float = 1.0  # healthy seconds before each fault window
    warmup: float = 2.0
    settle: float = 2.0
    seed: int = 7
    keep: Path | None = None  # copy the processes' logs here
    realtime: bool = False  # run everything under SCHED_RR (see --realtime)
    hostile: float = 0.0  # seconds of each hostile-client window on the process side; 0: none


# gRPC's own report of an answer it could not send: the caller (Envoy) had given up.
_UNDELIVERED = "ExecuteBatchError raised in core by servicer method"


def _log_errors(log: str) -> tuple[int, int]:
    """(answers gRPC could not deliver, any other traceback) in a sidecar's process log."""
    undelivered = log.count(_UNDELIVERED)
    return undelivered, log.count("Traceback") - undelivered


def _decisions(guarded: GuardedSidecar) -> dict[int, tuple[str, str, float]]:
    """The sidecar's decision log: check number (from the path) -> (outcome, reason, latency ms)."""
    found = {}
    for entry in guarded.sidecar.decisions():
        _, _, number = str(entry.get("path", "")).rpartition("/")
        if number.isdigit():
            found[int(number)] = (entry["outcome"], entry.get("reason", "allow"), float(entry["latency_ms"]))
    return found


def _port(url: str) -> int:
    return int(url.rstrip("/").rpartition(":")[2])


def _counters(guarded: GuardedSidecar) -> dict[str, dict[str, int]]:
    wanted = ("ok", "denied", "error", "failure_mode_allowed", "disabled")
    return {
        f"{guarded.name}/{mode}": {
            name: value
            for name, value in (
                (full.removeprefix(EXT_AUTHZ_STATS), value)
                for full, value in envoy.counters(EXT_AUTHZ_STATS).items()
            )
            if name in wanted
        }
        for mode, envoy in guarded.envoys.items()
    }


@dataclass(frozen=True)
class _Either:
    """OPA faults and hostile-client windows in one schedule, so that they never overlap."""

    faults: Injector
    hostile: Injector

    def inject(self, kind: str, seconds: float) -> Window:
        return (self.hostile if kind.startswith(HOSTILE) else self.faults).inject(kind, seconds)


def run(config: ChaosConfig, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    with contextlib.ExitStack() as cleanup:
        if config.realtime:
            # Every thread and process started from here on inherits the policy.
            policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
            cleanup.callback(os.sched_setscheduler, 0, policy, param)
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        if config.keep is not None:
            cleanup.callback(
                shutil.copytree,
                workdir,
                config.keep,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("*.sock"),
            )
        echo = EchoProcess()
        cleanup.callback(echo.stop)
        opa = RecordingOpa(workdir)
        opa.start()
        cleanup.callback(opa.stop)
        fault = cleanup.enter_context(FaultOpa())
        chooser = AnswerChooser(config.seed)
        fault.set(chooser)
        sides = {
            PROCESS_SIDE: start_guarded(PROCESS_SIDE, opa.url, echo.addr, workdir),
            ANSWER_SIDE: start_guarded(ANSWER_SIDE, fault.url, echo.addr, workdir),
        }
        for guarded in sides.values():
            cleanup.callback(guarded.stop)
        targets = [(side, mode) for side in sides for mode in ENVOY_MODES]
        addresses = [("127.0.0.1", sides[side].envoys[mode].port) for side, mode in targets]
        pids = {side: guarded.sidecar.process.pid for side, guarded in sides.items()}
        load = LoadThread(LoadGenerator(addresses, config.connections, config.rate))
        watched: dict[str, Callable[[], int]] = {"opa": lambda: opa.pid, "fault-opa": os.getpid}
        for side, guarded in sides.items():
            watched[side] = functools.partial(int, guarded.sidecar.process.pid)
            for mode, envoy in guarded.envoys.items():
                watched[f"{side}/{mode}"] = functools.partial(int, envoy.process.pid)
        sampler = Sampler(watched, memory=list(sides))
        sampler.start()
        started = time.monotonic()
        load.start()
        time.sleep(config.warmup)
        baseline = {side: sample(pid) for side, pid in pids.items()}
        opa_ports = {PROCESS_SIDE: _port(opa.url), ANSWER_SIDE: _port(fault.url)}
        opa_at_start = {side: connections_to(pid, opa_ports[side]) for side, pid in pids.items()}
        progress(f"warm: {load.count} checks; injecting faults")

        windows: list[Window] = []

        def keep_going() -> bool:
            if config.checks is None:
                return False
            progress(f"{load.count} checks")
            return load.count < config.checks

        attacked = sides[PROCESS_SIDE].sidecar
        hostile = HostileClients(PROCESS_SIDE, attacked.grpc_addr, attacked.http_addr, attacked.probe_addr)
        process_steps = list(PROCESS_SCHEDULE)
        if config.hostile > 0:
            process_steps += [(kind, config.hostile) for kind in hostile.kinds()]
        schedules = [
            threading.Thread(
                target=run_schedule,
                args=(
                    _Either(ProcessFaults(opa, PROCESS_SIDE), hostile),
                    process_steps,
                    config.gap,
                    keep_going,
                    windows,
                ),
            ),
            threading.Thread(
                target=run_schedule,
                args=(AnswerFaults(chooser, ANSWER_SIDE), ANSWER_SCHEDULE, config.gap, keep_going, windows),
            ),
        ]
        for schedule in schedules:
            schedule.start()
        for schedule in schedules:
            schedule.join()
        load.stop()
        seconds = time.monotonic() - started
        time.sleep(config.settle)
        sampler.stop()
        end = {side: sample(pid) for side, pid in pids.items()}
        opa_at_end = {side: connections_to(pid, opa_ports[side]) for side, pid in pids.items()}
        progress(f"done: {load.count} checks; counting")

        data = RunData(
            results=load.generator.results,
            targets=targets,
            windows=windows,
            yes={PROCESS_SIDE: opa.yes_markers(), ANSWER_SIDE: set(chooser.yes)},
            decisions={side: _decisions(guarded) for side, guarded in sides.items()},
            envoy_counters={k: v for guarded in sides.values() for k, v in _counters(guarded).items()},
            baseline=baseline,
            peak=sampler.peak,
            end=end,
            cpu_wait=sampler.cpu_wait,
            opa_of={PROCESS_SIDE: "opa", ANSWER_SIDE: "fault-opa"},
            sidecar_alive={side: guarded.sidecar.running for side, guarded in sides.items()},
            sidecar_log={side: _log_errors(guarded.sidecar.log()) for side, guarded in sides.items()},
            answers=chooser.answers,
            concurrency={side: config.connections * len(ENVOY_MODES) for side in sides},
            seconds=seconds,
            opa_connections={side: (opa_at_start[side], opa_at_end[side]) for side in sides},
            attacked={PROCESS_SIDE} if hostile.activity else set(),
            extra={
                "opa": opa.kind,
                "opa_restarts": opa.starts - 1,
                "cpu_wait": sampler.summary(),
                "hostile": {kind: dict(counts) for kind, counts in hostile.activity.items()},
                # Only the fault OPA sees every request (the process side's OPA records its yeses).
                "fault_opa_most_requests_for_one_check": max(chooser.asked.values(), default=0),
            },
        )
        return report(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.adversarial.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--checks", type=int, help="cycle the faults until this many checks (default: one pass)"
    )
    parser.add_argument("--connections", type=int, default=ChaosConfig.connections, help="per Envoy")
    parser.add_argument("--rate", type=float, default=ChaosConfig.rate, help="checks per second in all")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed, help="for the mixed fault window")
    parser.add_argument("--report", type=Path, help="write the figures as JSON to this file")
    parser.add_argument("--keep-logs", type=Path, help="copy every process's logs into this directory")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run this process and every process it starts (sidecars, Envoys, OPA, upstream) with real-time "
        "scheduling (needs CAP_SYS_NICE), so that other work on a shared machine cannot starve them of CPU",
    )
    parser.add_argument(
        "--hostile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="add hostile-client windows of this length to the process side's schedule",
    )
    args = parser.parse_args(argv)
    config = ChaosConfig(
        checks=args.checks,
        connections=args.connections,
        rate=args.rate,
        seed=args.seed,
        keep=args.keep_logs,
        realtime=args.realtime,
        hostile=args.hostile,
    )
    rep = run(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    problems = violations(rep)
    if args.report:
        args.report.write_text(json.dumps({**rep, "violations": problems}, indent=2) + "\n")
    print(summary(rep, problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
