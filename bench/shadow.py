"""What --shadow-decision-path costs: the same sidecar with and without a shadow
rule, side by side in one run, against the zero-cost OPA (nginx answers every
/v1/data/ path, the candidate's included).

    python -m bench.shadow [--duration 10] [--report bench/SHADOW.md]

Points alternate (plain, shadow, plain, shadow, ...) so drift on a shared
machine lands on both. Each answer h2load counts is checked against the
decision log: one enforced line per check, plus one shadow line with the
shadow.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench import loadgen, workload
from bench.procs import BenchError
from bench.runner import GRPC_URL
from bench.services import SidecarServer, sidecar_options, start_nginx, start_sidecar, wait_ready

CANDIDATE = "envoy/authz/candidate"


def _lines(server: SidecarServer) -> tuple[int, int]:
    """(enforced, shadow) decision-log lines so far."""
    server.decisions.settle()
    enforced = shadow = 0
    for line in server.service.stdout_path.read_bytes().splitlines():
        entry = orjson.loads(line)
        if "shadow" in entry:
            shadow += 1
        elif entry.get("outcome") == "allow":
            enforced += 1
    return enforced, shadow


def run(duration: float, concurrencies: list[int], rounds: int) -> str:
    tools = loadgen.require_tools(["h2load", "nginx"])
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        workdir = Path(tmp)
        frame = workdir / "check.grpc"
        frame.write_bytes(workload.check_request_frame())
        nginx = start_nginx(tools["nginx"], workdir)
        options = sidecar_options()
        plain = start_sidecar("plain", nginx.port, workdir, options)
        shadow = start_sidecar("shadow", nginx.port, workdir, options, ("--shadow-decision-path", CANDIDATE))
        servers = [nginx, plain, shadow]
        try:
            for server in servers:
                wait_ready(server)
            rows = []
            for concurrency in concurrencies:
                loads: dict[str, list[loadgen.Load]] = {"plain": [], "shadow": []}
                for _ in range(rounds):
                    for name, server in (("plain", plain), ("shadow", shadow)):
                        load = loadgen.h2load(
                            tools["h2load"],
                            GRPC_URL.format(port=server.port),
                            data=frame,
                            headers=workload.GRPC_HEADERS,
                            concurrency=concurrency,
                            duration=duration,
                            log_file=workdir / "h2load.log",
                            timeout=duration + 60,
                        )
                        if load.errors:
                            raise BenchError(f"{name} c={concurrency}: {load.errors} checks not answered OK")
                        loads[name].append(load)
                rows.append((concurrency, loads))
            checked = {name: _lines(server) for name, server in (("plain", plain), ("shadow", shadow))}
        finally:
            for server in reversed(servers):
                server.service.stop()
    return _report(rows, checked, duration, rounds)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _report(
    rows: list[tuple[int, dict[str, list[loadgen.Load]]]],
    checked: dict[str, tuple[int, int]],
    duration: float,
    rounds: int,
) -> str:
    out = [
        "# Shadow evaluation: what it costs",
        "",
        f"`python -m bench.shadow`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"One sidecar without and one with `--shadow-decision-path {CANDIDATE}`, both asking the "
        f"zero-cost OPA (nginx); {rounds} alternating rounds of {duration:g} s per point; the median "
        "round is shown. The shadow never changes a verdict (tests/integration/test_shadow.py); "
        "this measures its latency and throughput cost.",
        "",
        "| concurrency | checks/s plain | checks/s shadow | ratio | p50 ms plain | p50 ms shadow | "
        "p99 ms plain | p99 ms shadow | added p50 ms | added p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for concurrency, loads in rows:
        p, s = loads["plain"], loads["shadow"]
        rate_p, rate_s = _median([x.rate for x in p]), _median([x.rate for x in s])
        p50_p, p50_s = _median([x.p50_ms for x in p]), _median([x.p50_ms for x in s])
        p99_p, p99_s = _median([x.p99_ms for x in p]), _median([x.p99_ms for x in s])
        cells = [f"{concurrency}", f"{rate_p:,.0f}", f"{rate_s:,.0f}", f"{rate_s / rate_p:.2f}"]
        cells += [f"{p50_p:.3f}", f"{p50_s:.3f}", f"{p99_p:.3f}", f"{p99_s:.3f}"]
        cells += [f"{p50_s - p50_p:+.3f}", f"{p99_s - p99_p:+.3f}"]
        out.append("| " + " | ".join(cells) + " |")
    (pe, ps), (se, ss) = checked["plain"], checked["shadow"]
    out += [
        "",
        f"Decision log: plain {pe} allows and {ps} shadow lines; shadow {se} allows and {ss} shadow lines "
        "(a shadow line is written when the candidate answers, after the enforced answer has gone).",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shadow", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point (default 10)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated (default 1,16)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per point (default 3)")
    parser.add_argument("--report", type=Path, help="write the markdown here as well")
    args = parser.parse_args(argv)
    try:
        text = run(args.duration, [int(c) for c in args.concurrency.split(",")], args.rounds)
    except BenchError as exc:
        print(f"bench.shadow: {exc}", file=sys.stderr)
        return 1
    print(text)
    if args.report:
        args.report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
