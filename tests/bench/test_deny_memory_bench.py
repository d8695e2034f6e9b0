"""The deny memory's benchmark must not rot: a short run prints all three
variants. Nothing about time is asserted."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(
    r"^\| (off|on, in process \(hold\)|on, shared store \(hold\)) \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$"
)


def test_a_short_run_reports_every_variant() -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/install-system-tools.sh")
    run = subprocess.run(
        [sys.executable, "-m", "bench.deny_memory", "--checks", "300"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [m.group(1) for line in run.stdout.splitlines() if (m := ROW.match(line))]
    assert rows == ["off", "on, in process (hold)", "on, shared store (hold)"], run.stdout
