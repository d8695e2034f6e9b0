"""Deadline under load: with OPA hanging, every check through Envoy is denied before
Envoy's 250 ms timeout, through the shipped fail-closed Envoy and one with
`failure_mode_allow: true` alike. The one-request version is the `hang` case of
tests/e2e/test_hostile_envoy.py; this one keeps both Envoys busy for a few seconds.

As in the chaos runs, an answer that misses the deadline is tolerated only while the
machine kept the sidecar from running (its event loop waiting for a CPU); the test
warns when that happened and fails when a miss has no such excuse.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest

from tests.adversarial.chaos_report import STARVED_MS
from tests.adversarial.chaos_stack import ENVOY_MODES, EchoProcess, start_guarded
from tests.adversarial.loadgen import LoadGenerator, LoadThread
from tests.adversarial.process_monitor import Sampler, cpu_waited_ms
from tests.e2e.stack import EXT_AUTHZ_STATS
from tests.fault_opa import Behaviour, FaultOpa

RATE = 120.0  # checks per second over both Envoys; each one waits out the 150 ms budget
CONNECTIONS = 12  # per Envoy: enough for RATE at 150 ms a check
SECONDS = 4.0


@pytest.mark.timeout(120)
def test_hanging_opa_under_load_is_denied_before_envoys_timeout() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hang-"))
    with contextlib.ExitStack() as cleanup, FaultOpa() as fault:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        fault.set(Behaviour.hang())
        echo = EchoProcess()
        cleanup.callback(echo.stop)
        guarded = start_guarded("hang", fault.url, echo.addr, workdir)
        cleanup.callback(guarded.stop)
        pids = {"sidecar": guarded.sidecar.process.pid} | {
            m: e.process.pid for m, e in guarded.envoys.items()
        }
        sampler = Sampler({name: functools.partial(int, pid) for name, pid in pids.items()})
        sampler.start()
        cleanup.callback(sampler.stop)
        load = LoadThread(
            LoadGenerator(
                [("127.0.0.1", guarded.envoys[mode].port) for mode in ENVOY_MODES], CONNECTIONS, RATE
            )
        )
        load.start()
        time.sleep(SECONDS)
        load.stop()
        counters = {
            mode: {
                name.removeprefix(EXT_AUTHZ_STATS): value
                for name, value in guarded.envoys[mode].counters(EXT_AUTHZ_STATS).items()
                if name.endswith(("ok", "denied", "error", "failure_mode_allowed"))
            }
            for mode in ENVOY_MODES
        }
        decisions = guarded.sidecar.decisions()
        opa_checks = [r for r in fault.requests if r.path.startswith("/v1/data/")]

    results = load.generator.results
    assert len(results) >= RATE * SECONDS * 0.7
    statuses = Counter((ENVOY_MODES[r.target], r.status) for r in results)
    misses = [r for r in results if r.status != 403]
    # A miss: fail-closed Envoy answers 503, fail-open Envoy passes the request (200).
    assert all(r.status == (503 if ENVOY_MODES[r.target] == "fail-closed" else 200) for r in misses), statuses
    unexplained = [
        r for r in misses if cpu_waited_ms(sampler.cpu_wait["sidecar"], r.sent, r.done) < STARVED_MS
    ]
    assert not unexplained, (statuses, sampler.summary())
    if misses:
        warnings.warn(
            f"{len(misses)} deadline misses while starved of CPU: {sampler.summary()}", stacklevel=1
        )

    reasons = Counter(d.get("reason") for d in decisions)
    assert set(reasons) == {"opa_timeout"}, reasons
    assert len(opa_checks) == len(decisions)  # one OPA request per check, none retried
    latencies = sorted(d["latency_ms"] for d in decisions)
    print(
        f"{len(results)} checks {dict(statuses)}; sidecar latency p50 {latencies[len(latencies) // 2]} ms, "
        f"max {latencies[-1]} ms; CPU wait {sampler.summary()}; Envoy {counters}"
    )
    for mode in ENVOY_MODES:
        stats = counters[mode]
        mode_misses = sum(ENVOY_MODES[r.target] == mode for r in misses)
        assert stats["error"] == mode_misses, (mode, stats)
        assert stats["failure_mode_allowed"] == (mode_misses if mode == "fail-open" else 0), (mode, stats)
        assert stats["ok"] == 0, (mode, stats)
