"""The benchmark harness must not rot: a seconds-long run of every setup that
writes a complete report and leaves no process behind. Nothing about time is
asserted: CI machines differ."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadgen import require_tools
from bench.procs import BenchError

REPO = Path(__file__).resolve().parents[2]
QUICK_CONCURRENCIES = (1, 16)
EVERY_CONCURRENCY = ("F", "Z", "R", "E0", "EZ")
CONCURRENCY_ONE_ONLY = ("N", "O")
ROW = re.compile(r"^\| (\w+) \| (\d+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (.*)$", re.MULTILINE)


def _open_by(directory: Path) -> list[str]:
    """Processes that still hold a file under ``directory`` open."""
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            targets = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(t.startswith(str(directory)) for t in targets):
            holders.append(proc.name)
    return holders


@pytest.mark.timeout(300)
def test_quick_run_reports_every_setup_and_cleans_up(tmp_path: Path) -> None:
    try:
        require_tools(["h2load", "nginx", "wrk", "envoy"])
    except BenchError as exc:
        pytest.fail(f"the benchmark smoke needs its tools: {exc}")
    report = tmp_path / "REPORT.md"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--soak", "400", "--report", str(report)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    text = report.read_text()
    rows = {(m.group(1), int(m.group(2))): m.group(7) for m in ROW.finditer(text)}
    expected = {(s, c) for s in EVERY_CONCURRENCY for c in QUICK_CONCURRENCIES}
    expected |= {(s, 1) for s in CONCURRENCY_ONE_ONLY}
    if "Z2 (`--workers 2`) not measured" not in text:
        expected |= {("Z2", c) for c in QUICK_CONCURRENCIES}
    assert expected <= set(rows), f"missing rows: {sorted(expected - set(rows))}"
    assert not any("FAILED" in rest for rest in rows.values())
    for target in ("x F checks/s", "concurrency 1: Z p50", "RSS <= 80 MB"):
        assert target in text
    assert "## Memory soak" in text and "400 checks" in text
    assert "| CPU | " in text and "| Python | " in text  # the machine is described
    # R's whole path: the sidecar's CPU plus that of the OPA it asked, per point.
    real_opa = re.findall(r"^- c=(\d+): .* sidecar ([\d.]+) \+ OPA ([\d.]+) = ([\d.]+)$", text, re.MULTILINE)
    assert {int(c) for c, *_ in real_opa} == set(QUICK_CONCURRENCIES)
    for _, sidecar, opa, path in real_opa:
        assert float(opa) > 0 and abs(float(sidecar) + float(opa) - float(path)) < 0.002
    if len(os.sched_getaffinity(0)) >= 2:
        assert f"run on CPU {max(os.sched_getaffinity(0))} alone (taskset)" in text

    # Every process the run started is gone, and so is its working directory.
    assert list(scratch.iterdir()) == []
    assert _open_by(scratch) == []
