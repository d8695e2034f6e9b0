"""The load generator can be kept to one CPU, and the harness refuses a CPU it cannot use."""

from __future__ import annotations

import argparse
import os

import pytest

from bench.cli import _loadgen_cpu
from bench.loadgen import pinned


def test_unpinned_argv_is_unchanged() -> None:
    assert pinned(["h2load", "-c", "4"], None) == ["h2load", "-c", "4"]


def test_pinned_argv_runs_under_taskset_on_that_cpu() -> None:
    argv = pinned(["h2load", "-c", "4"], 1)
    assert os.path.basename(argv[0]) == "taskset"
    assert argv[1:] == ["-c", "1", "h2load", "-c", "4"]


def test_cpu_option_takes_a_usable_cpu_or_any() -> None:
    usable = max(os.sched_getaffinity(0))
    assert _loadgen_cpu(str(usable)) == usable
    assert _loadgen_cpu("any") is None
    for bad in ("-1", "x", str((os.cpu_count() or 1) + 64), "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            _loadgen_cpu(bad)


def test_back_to_back_runs_add_up_as_one() -> None:
    # The soak runs its checks in pieces shorter than the sidecar's 60 s connection age.
    from bench.loadgen import Load, combined

    # completed, errors, started, seconds, p50, p90, p99, load generator CPU
    first = Load(900, 0, 901, 9.0, 1.0, 2.0, 3.0, 1.0)
    second = Load(100, 1, 102, 1.0, 5.0, 6.0, 7.0, 0.5)
    both = combined([first, second])
    assert (both.completed, both.errors, both.started, both.seconds) == (1000, 1, 1003, 10.0)
    assert both.rate == 100.0
    assert (both.p50_ms, both.p99_ms, both.loadgen_cpu_s) == (1.0, 3.0, 1.5)
