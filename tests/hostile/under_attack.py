"""Envoy's checks measured while a hostile client works on the sidecar's gRPC port.

Every check the policy answers is a deny, so any request that reaches the upstream
was let through (by a fail-open Envoy, after the sidecar answered too late or with
an error). The sidecar's resident memory is sampled all along, and so is how long
the sidecar's and Envoy's threads waited for a CPU: as in the adversarial suite, a
late answer is excused only while the machine, not the sidecar, held it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests.adversarial.chaos_report import STARVED_MS
from tests.adversarial.process_monitor import Sampler, cpu_waited_ms, sample
from tests.e2e.stack import Stack
from tests.hostile.http_attackers import ordinary_scheduling

REPO_ROOT = Path(__file__).resolve().parents[2]
# Envoy's ext_authz timeout in the shipped configuration: an answer later than
# this is an error to Envoy, and an allow to a fail-open one.
ENVOY_CHECK_TIMEOUT = 0.25


class Attack(Protocol):
    def start(self, threads: int = 1) -> None: ...
    def stop(self) -> None: ...


class AttackProcess:
    """An attacker of tests/hostile/h2_attackers.py in a process of its own, at
    the lowest CPU priority unless told otherwise. In a pod the attacker is
    another container with its own CPU limit, so it cannot take the sidecar's
    CPU; what is measured is what it makes the sidecar do through the port. Nor
    does it share the test's own interpreter (Envoy's clients and the OPA)."""

    def __init__(self, kind: str, host: str, port: int, niceness: int = 19) -> None:
        self.kind, self.host, self.port = kind, host, port
        self.niceness = niceness
        self.counts: dict[str, int] = {}
        self._process: subprocess.Popen[str] | None = None

    def start(self, threads: int = 1) -> None:
        command = [sys.executable, "-m", "tests.hostile.h2_attackers", self.kind, self.host, str(self.port)]
        self._process = subprocess.Popen(
            [*command, str(threads)],
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
            text=True,
            preexec_fn=self._lowered,
        )

    def _lowered(self) -> None:
        ordinary_scheduling()
        os.nice(self.niceness)

    def stop(self) -> None:
        assert self._process is not None
        self._process.terminate()
        out, _ = self._process.communicate(timeout=30)
        self.counts = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


@dataclass
class AttackReport:
    requests: int = 0
    let_through: int = 0  # reached the upstream
    late: int = 0  # let through, or answered after Envoy's timeout
    late_while_starved: int = 0  # ... while the machine kept the sidecar or Envoy from a CPU
    statuses: dict[int, int] = field(default_factory=dict)
    slowest_s: float = 0.0
    envoy_errors: int = 0  # ext_authz.error: no answer in time, or a gRPC error
    failure_mode_allowed: int = 0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_before_mib

    @property
    def late_unexcused(self) -> int:
        return self.late - self.late_while_starved

    def summary(self) -> str:
        return (
            f"{self.requests} checks through Envoy: {self.let_through} let through, "
            f"{self.late} late ({self.late_while_starved} while starved of CPU), "
            f"{self.envoy_errors} Envoy errors, {self.failure_mode_allowed} failure_mode_allowed, "
            f"statuses {self.statuses}, slowest {self.slowest_s * 1000:.0f} ms; sidecar RSS "
            f"{self.rss_before_mib:.0f} MiB -> peak {self.rss_peak_mib:.0f} MiB"
        )


def _rss_mib(pid: int) -> float:
    return sample(pid).rss_kib / 1024


def measure(stack: Stack, attack: Attack, seconds: float, clients: int = 4, threads: int = 2) -> AttackReport:
    """Run `attack` for `seconds` while `clients` threads send requests through Envoy."""
    pid = stack.sidecar.process.pid
    report = AttackReport(rss_before_mib=_rss_mib(pid))
    report.rss_peak_mib = report.rss_before_mib
    counters_before = stack.authz_counters()
    upstream_before = len(stack.upstream.received)
    lock = threading.Lock()
    stop = threading.Event()
    late: list[tuple[float, float]] = []

    def send_checks() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = stack.envoy.request("GET", "/orders/under-attack", timeout=5).status
            except OSError:
                status = 0
            done = time.monotonic()
            took = done - started
            with lock:
                if status != 403 or took >= ENVOY_CHECK_TIMEOUT:
                    late.append((started, done))
                report.requests += 1
                report.statuses[status] = report.statuses.get(status, 0) + 1
                report.slowest_s = max(report.slowest_s, took)
            stop.wait(0.01)

    def watch_memory() -> None:
        while not stop.wait(0.05):
            report.rss_peak_mib = max(report.rss_peak_mib, _rss_mib(pid))

    sampler = Sampler({"sidecar": lambda: pid, "envoy": lambda: stack.envoy.process.pid})
    sampler.start()
    workers: list[threading.Thread] = [threading.Thread(target=watch_memory, daemon=True)]
    workers += [threading.Thread(target=send_checks, daemon=True) for _ in range(clients)]
    attack.start(threads)
    for worker in workers:
        worker.start()
    try:
        time.sleep(seconds)
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
        attack.stop()
        sampler.stop()
    report.late = len(late)
    report.late_while_starved = sum(
        max(cpu_waited_ms(waits, sent, done) for waits in sampler.cpu_wait.values()) >= STARVED_MS
        for sent, done in late
    )
    counters = stack.authz_counters()
    report.envoy_errors = counters.get("error", 0) - counters_before.get("error", 0)
    report.failure_mode_allowed = counters.get("failure_mode_allowed", 0) - counters_before.get(
        "failure_mode_allowed", 0
    )
    report.let_through = len(stack.upstream.received) - upstream_before
    return report
