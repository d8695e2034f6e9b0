"""``python -m bench``: run every setup side by side and write the report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.loadgen import require_tools
from bench.procs import BenchError
from bench.report import render
from bench.runner import Plan, Run, terminate_on_signals

DEFAULT_REPORT = Path(__file__).parent / "REPORT.md"
EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


def _concurrencies(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrencies must be positive")
    return values


def _default_loadgen_cpu() -> int | None:
    """The last usable CPU when there are two or more, so the load generator
    keeps to one core; on one CPU there is nothing to pin."""
    usable = sorted(os.sched_getaffinity(0))
    return usable[-1] if len(usable) >= 2 else None


def _loadgen_cpu(text: str) -> int | None:
    if text == "any":
        return None
    if not text.isdigit() or int(text) not in os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"not a usable CPU number (or 'any'): {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the sidecar beside a floor gRPC server, nginx, the OPA test server and Envoy.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point (default 10)")
    parser.add_argument(
        "--concurrency",
        type=_concurrencies,
        default=(1, 16, 64),
        help="comma-separated concurrencies of the closed loop (default 1,16,64)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a seconds-long smoke: 0.5 s points at concurrency 1 and 16"
    )
    parser.add_argument(
        "--soak", type=int, default=0, metavar="N", help="also send N checks to a fresh sidecar, watching RSS"
    )
    parser.add_argument("--profile", action="store_true", help="also profile Z under load with py-spy")
    parser.add_argument(
        "--loadgen-cpu",
        type=_loadgen_cpu,
        default=_default_loadgen_cpu(),
        metavar="CPU",
        help="run h2load and wrk on this CPU alone (taskset); 'any' to leave them unpinned "
        "(default: the last usable CPU when there are two or more)",
    )
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="markdown report to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shown = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    command = f"python -m bench {shown}".strip()
    if args.quick:
        plan = Plan(duration=0.5, concurrencies=(1, 16), warmup_checks=200, soak_checks=args.soak)
    else:
        plan = Plan(args.duration, args.concurrency, warmup_checks=2000, soak_checks=args.soak)
    plan = Plan(
        plan.duration,
        plan.concurrencies,
        plan.warmup_checks,
        plan.soak_checks,
        args.profile,
        args.loadgen_cpu,
    )
    started = time.monotonic()
    try:
        pin = ["taskset"] if plan.loadgen_cpu is not None else []
        tools = require_tools(
            ["h2load", "nginx", "wrk", "envoy", *pin, *(["py-spy"] if args.profile else [])]
        )
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, terminate_on_signals():
        run = Run(plan, tools, Path(tmp))
        try:
            results = run.execute()
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("bench: interrupted; every process it started is being stopped", file=sys.stderr)
            return EXIT_FAILED
        finally:
            problems = run.stop_all()
    for problem in problems:
        print(f"bench: {problem}", file=sys.stderr)
    args.report.write_text(render(results, tools, command, plan.duration, plan.loadgen_cpu))
    print(f"report written to {args.report} in {time.monotonic() - started:.0f}s")
    if not results.ok or problems:
        print("bench: some answers could not be verified or processes did not stop cleanly", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
