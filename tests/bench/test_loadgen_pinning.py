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
