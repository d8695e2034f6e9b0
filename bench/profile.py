"""Where a sidecar's CPU goes: samples of its main thread (the event loop,
the only thread that runs the pipeline) under load.

py-spy (non-blocking) gives shares per Python function; C code run from the
loop (grpc's Cython core, syscalls) shows up only as the Python frame that
called it. perf's software clock, when perf is installed, then splits the
thread's CPU by binary: the interpreter, the kernel, grpc's core, protobuf.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from bench.loadgen import Load
from bench.procs import BenchError
from bench.results import Hotspot, Profile

_CLOCK_TICKS = 100
# "func (file.py:123)" -> "func (file.py)": lines of one function are one hot spot.
_LINE = re.compile(r":\d+\)$")


def fold(stacks: Iterable[str], thread_id: int) -> tuple[int, Counter[str], Counter[str]]:
    """Samples, self counts and inclusive counts per function of one thread,
    from py-spy's raw ``--threads`` output (``thread (TID): NAME;frame;...;leaf COUNT``)."""
    prefix = f"thread ({thread_id})"
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in stacks:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack.startswith(prefix) or not count_text.isdigit():
            continue
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")[1:]]
        if not frames:
            continue
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own, inclusive


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name added up)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return out


def _short(frame: str) -> str:
    """Drop the directories of a frame's file: ``f (a/b/c.py)`` -> ``f (b/c.py)``."""
    return re.sub(r"\(([^()]*/)?([^/()]+/[^/()]+)\)", r"(\2)", frame)


def _py_spy(py_spy: str, pid: int, seconds: float, out: Path, drive: Callable[[], Load]) -> Load:
    argv = [py_spy, "record", "-p", str(pid), "-d", str(round(seconds) + 1), "-f", "raw", "-o", str(out)]
    argv += ["--threads", "--nonblocking", "-r", "100"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as spy:
        load = drive()
        try:
            text, _ = spy.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.communicate()
            raise BenchError("py-spy did not finish") from None
    if spy.returncode != 0 or not out.exists():
        tail = text.decode(errors="replace")[-1500:]
        raise BenchError(f"py-spy failed (it needs ptrace permission):\n{tail}")
    return load


_PERF_DSO = re.compile(r"^\s*([\d.]+)%\s+(\S+)", re.MULTILINE)


def _perf_libraries(
    perf: str, tid: int, seconds: float, out: Path, drive: Callable[[], Load]
) -> list[Hotspot]:
    """Shares of the thread's CPU per binary (the interpreter, the kernel, grpc's
    core, ...) from perf's software clock: unbiased, unlike ptrace sampling."""
    argv = [perf, "record", "-q", "-e", "cpu-clock", "-F", "499", "-t", str(tid), "-o", str(out)]
    with subprocess.Popen(
        [*argv, "--", "sleep", f"{seconds:g}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as rec:
        drive()
        text, _ = rec.communicate(timeout=seconds + 60)
    if rec.returncode != 0 or not out.exists():
        raise BenchError(f"perf record failed:\n{text.decode(errors='replace')[-1500:]}")
    report = subprocess.run(
        [perf, "report", "-i", str(out), "--sort", "dso", "--stdio"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    return [Hotspot(_dso_name(m.group(2)), float(m.group(1)) / 100, 0.0) for m in _PERF_DSO.finditer(report)]


def _dso_name(dso: str) -> str:
    if dso.startswith("cygrpc"):
        return "grpc core (cygrpc)"
    if dso.startswith("_message"):
        return "protobuf (upb)"
    if dso.startswith("parser.cpython"):
        return "httptools (llhttp)"
    if dso == "[kernel.kallsyms]":
        return "kernel (syscalls, wakeups)"
    return dso.split(".cpython")[0]


def profile(
    py_spy: str,
    perf: str | None,
    pid: int,
    seconds: float,
    concurrency: int,
    drive: Callable[[], Load],
    workdir: Path,
    top: int = 12,
) -> Profile:
    """Sample the main thread of ``pid`` while ``drive`` loads it: py-spy,
    then perf when given."""
    before = thread_cpu(pid)
    load = _py_spy(py_spy, pid, seconds, workdir / "python.pyspy", drive)
    after = thread_cpu(pid)
    libraries = _perf_libraries(perf, pid, seconds, workdir / "perf.data", drive) if perf else []
    with (workdir / "python.pyspy").open() as stacks:
        samples, own, inclusive = fold(stacks, pid)
    share = 1 / samples if samples else 0.0
    # The loop's callers (runpy, asyncio.run, main) are on every stack and say nothing.
    loop = max((n for f, n in inclusive.items() if f.startswith("BaseEventLoop._run_once")), default=samples)
    deep = [f for f, n in inclusive.most_common() if n < loop or own[f]]
    threads = sorted(((n, after[n] - before.get(n, 0.0)) for n in after), key=lambda t: -t[1])
    return Profile(
        concurrency=concurrency,
        seconds=seconds,
        samples=samples,
        checks=load.completed,
        self_top=[Hotspot(_short(f), n * share, inclusive[f] * share) for f, n in own.most_common(top)],
        total_top=[Hotspot(_short(f), own[f] * share, inclusive[f] * share) for f in deep[:top]],
        libraries=[h for h in libraries if h.self_share >= 0.005],
        threads=[(n, s) for n, s in threads if s > 0],
    )
