"""The markdown report: the machine, every measured row, the issue's targets."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench.results import SETUPS, Profile, Results, Row, Soak

MIB = 2**20
# The targets (issue 6) for this 2-core machine kind.
Z_OVER_F_MIN = 0.6
LATENCY_FACTOR_MAX = 1.3
WORKERS_SPEEDUP_MIN = 1.5
SOAK_TARGET_CHECKS = 1_000_000
SOAK_RSS_MAX = 80 * 10**6
# Second-half growth below this is allocator noise, not a leak.
SOAK_GROWTH_TOLERANCE = 1 * MIB


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def machine(tools: dict[str, str]) -> list[tuple[str, str]]:
    repo = Path(__file__).resolve().parent.parent
    commit = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(repo), "status", "--porcelain", "--", "sidecar"])
    return [
        ("CPU", f"{_cpu_model()}, {os.cpu_count()} logical CPUs ({len(os.sched_getaffinity(0))} usable)"),
        ("memory", f"{_meminfo_total() / 2**30:.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("libraries", ", ".join(f"{p} {metadata.version(p)}" for p in ("grpcio", "protobuf", "orjson"))),
        ("sidecar", f"commit {commit}{'' if dirty in ('', '?') else ' + uncommitted changes in sidecar/'}"),
        ("h2load", _first_line([tools["h2load"], "--version"])),
        ("wrk", _first_line([tools["wrk"], "--version"]).split(" Copyright")[0]),
        ("nginx", _first_line([tools["nginx"], "-v"])),
        ("Envoy", _first_line([tools["envoy"], "--version"]).split("version:")[-1].strip()),
    ]


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _row_line(row: Row) -> str:
    load = row.load
    return (
        f"| {row.setup} | {row.concurrency} | {load.rate:,.0f} | {_ms(load.p50_ms)} | {_ms(load.p90_ms)} | "
        f"{_ms(load.p99_ms)} | {row.cpu_per_1k:.3f} | {row.server_rss_bytes / MIB:.1f} | "
        f"{row.loadgen_cpu_share * 100:.0f}% | {row.other_load:.2f} | "
        f"{row.verified}{'' if row.ok else ' **FAILED**'} |"
    )


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def _targets(results: Results) -> list[str]:
    lines = ["| target | measured | |", "|---|---|---|"]
    f, z = results.peak("F"), results.peak("Z")
    if f and z:
        ratio = z.load.rate / f.load.rate
        lines.append(
            f"| Z checks/s >= {Z_OVER_F_MIN} x F checks/s (one worker, each at its best concurrency) | "
            f"{z.load.rate:,.0f} / {f.load.rate:,.0f} = **{ratio:.2f}** (Z at c={z.concurrency}, "
            f"F at c={f.concurrency}) | {_verdict(ratio >= Z_OVER_F_MIN)} |"
        )
    f1, z1, n1 = results.row("F", 1), results.row("Z", 1), results.row("N", 1)
    if f1 and z1 and n1:
        budget = LATENCY_FACTOR_MAX * (f1.load.p50_ms + n1.load.p50_ms)
        lines.append(
            f"| concurrency 1: Z p50 <= {LATENCY_FACTOR_MAX} x (F p50 + direct POST p50) | "
            f"{z1.load.p50_ms:.3f} ms vs {LATENCY_FACTOR_MAX} x ({f1.load.p50_ms:.3f} + "
            f"{n1.load.p50_ms:.3f}) = {budget:.3f} ms: Z is "
            f"**{z1.load.p50_ms / budget * LATENCY_FACTOR_MAX:.2f}x** the sum "
            f"| {_verdict(z1.load.p50_ms <= budget)} |"
        )
    z2 = results.peak("Z2")
    if z and z2:
        speedup = z2.load.rate / z.load.rate
        lines.append(
            f"| `--workers 2` checks/s >= {WORKERS_SPEEDUP_MIN} x one worker | {z2.load.rate:,.0f} / "
            f"{z.load.rate:,.0f} = **{speedup:.2f}**; h2load took "
            f"{z2.loadgen_cpu_share * 100:.0f}% of a core | {_verdict(speedup >= WORKERS_SPEEDUP_MIN)} |"
        )
    else:
        lines.append(f"| `--workers 2` checks/s >= {WORKERS_SPEEDUP_MIN} x one worker | - | not measured |")
    lines.append(_soak_target(results.soak))
    return lines


def _soak_target(soak: Soak | None) -> str:
    name = f"RSS <= 80 MB after {SOAK_TARGET_CHECKS:,} checks, no growth over the second half"
    if soak is None:
        return f"| {name} | - (run with `--soak {SOAK_TARGET_CHECKS}`) | not measured |"
    growth = soak.rss_end - soak.rss_half
    met: bool | None = soak.rss_end <= SOAK_RSS_MAX and growth <= SOAK_GROWTH_TOLERANCE
    scale = ""
    if soak.checks < SOAK_TARGET_CHECKS:
        scale, met = f" (only {soak.checks:,} checks: not the target's count)", None
    return (
        f"| {name} | {soak.rss_end / 10**6:.1f} MB after {soak.checks:,} checks, "
        f"{growth / MIB:+.2f} MiB over the second half{scale} | {_verdict(met)} |"
    )


def _envoy(results: Results) -> list[str]:
    lines = []
    for row in results.rows:
        if row.setup != "E0":
            continue
        ez = results.row("EZ", row.concurrency)
        if ez is None:
            continue
        lines.append(
            f"- c={row.concurrency}: Envoy alone {row.load.rate:,.0f} req/s p50 {row.load.p50_ms:.3f} ms; "
            f"with ext_authz {ez.load.rate:,.0f} req/s p50 {ez.load.p50_ms:.3f} ms "
            f"(added p50 {ez.load.p50_ms - row.load.p50_ms:.3f} ms, "
            f"throughput x{ez.load.rate / row.load.rate:.2f})"
        )
    return lines


def _real_opa(results: Results) -> list[str]:
    """R's whole path: the sidecar's CPU and its OPA's, per check."""
    lines = [f"R and O ask {results.opa}, with `rego/` and the demo's routes.", ""]
    for row in results.rows:
        backend = row.backend_cpu_per_1k
        if row.setup != "R" or backend is None:
            continue
        lines.append(
            f"- c={row.concurrency}: {row.load.rate:,.0f} checks/s, p50 {row.load.p50_ms:.3f} ms; CPU ms per "
            f"check: sidecar {row.cpu_per_1k:.3f} + OPA {backend:.3f} = {row.cpu_per_1k + backend:.3f}"
        )
    return lines


def _soak(soak: Soak) -> list[str]:
    return [
        f"A fresh Z sidecar, {soak.checks:,} checks at concurrency {soak.concurrency} "
        f"({soak.rate:,.0f} checks/s; {soak.verified}):",
        "",
        "| after | RSS |",
        "|---|---|",
        f"| warm-up | {soak.rss_start / MIB:.1f} MiB |",
        f"| {soak.checks // 2:,} checks | {soak.rss_half / MIB:.1f} MiB |",
        f"| {soak.checks:,} checks | {soak.rss_end / MIB:.1f} MiB |",
        "",
        f"Growth over the second half: {(soak.rss_end - soak.rss_half) / MIB:+.2f} MiB "
        f"(tolerance {SOAK_GROWTH_TOLERANCE / MIB:.0f} MiB).",
    ]


def _profile(profile: Profile) -> list[str]:
    per_check = 1000 / profile.checks if profile.checks else float("nan")
    lines = [
        f"py-spy sampled Z's main thread (the event loop, which runs the whole pipeline) for "
        f"{profile.seconds:g} s at concurrency {profile.concurrency}; shares are of its busy samples.",
        "",
        f"CPU by thread during the first pass ({profile.checks:,} checks):",
        "",
        "| thread | CPU ms per check |",
        "|---|---|",
        *[f"| {name} | {seconds * per_check:.3f} |" for name, seconds in profile.threads],
        "",
        f"Python pass ({profile.samples:,} samples, non-blocking). Self = the function is on top of "
        "the stack, total = anywhere on it. C code (grpc's core, syscalls) counts as the Python frame "
        "that called it: `Handle._run` self is mostly grpc.aio's Cython callbacks.",
        "",
        "| function | self | total |",
        "|---|---|---|",
        *[f"| `{h.name}` | {h.self_share:.1%} | {h.total_share:.1%} |" for h in profile.self_top],
        "",
        "Largest inclusive shares:",
        "",
        "| function | self | total |",
        "|---|---|---|",
        *[f"| `{h.name}` | {h.self_share:.1%} | {h.total_share:.1%} |" for h in profile.total_top],
    ]
    if profile.libraries:
        lines += [
            "",
            "The main thread's CPU by binary (perf, software clock, a second run of the same load):",
            "",
            "| binary | share |",
            "|---|---|",
            *[f"| {h.name} | {h.self_share:.1%} |" for h in profile.libraries],
        ]
    return lines


def render(
    results: Results, tools: dict[str, str], command: str, duration: float, loadgen_cpu: int | None = None
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark report",
        "",
        f"`{command}`, {now}. Closed loop: each client sends its next request when the previous one "
        f"is answered; {duration:g} s per point. gRPC load comes from h2load with a pre-encoded "
        "CheckRequest (an authenticated GET with 12 headers), spread over up to 4 HTTP/2 connections; "
        "HTTP load through Envoy (concurrency 1, one worker thread) comes from wrk. "
        + (
            f"The load generators run on CPU {loadgen_cpu} alone (taskset); every other process "
            "may run on any CPU, that one included."
            if loadgen_cpu is not None
            else "Every process shares the same CPUs, the load generator included."
        ),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine(tools)],
        f"| CPU steal during the run | {results.steal_share:.1%} of all CPU time (shared host) |",
        "",
        "## Targets",
        "",
        *_targets(results),
        "",
        "## Results",
        "",
        "| setup | concurrency | checks/s | p50 ms | p90 ms | p99 ms | CPU s / 1k checks | RSS MiB "
        "| load generator CPU | other load | answers verified |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row_line(row) for row in results.rows],
        "",
        "CPU and RSS are those of the process named below for each setup (the sidecar's whole process "
        "tree), read from /proc; load generator CPU is a share of one core over the point; "
        "other load is the CPU (in cores) that processes outside the run took meanwhile "
        "on this shared machine. "
        '"Answers verified" is what the server itself counted: the sidecar\'s decision log lines '
        "(allow or deny), the floor's call counter, or HTTP statuses.",
        "",
        "| setup | what runs | load | CPU and RSS of |",
        "|---|---|---|---|",
        *[f"| {k} | {what} | {how} | {whose} |" for k, (what, how, whose) in SETUPS.items()],
        "",
    ]
    if results.opa:
        out += ["## With the real OPA", "", *_real_opa(results), ""]
    envoy = _envoy(results)
    if envoy:
        out += ["## Envoy end to end", "", *envoy, ""]
    if results.soak is not None:
        out += ["## Memory soak", "", *_soak(results.soak), ""]
    if results.profile is not None:
        out += ["## Where Z's time goes", "", *_profile(results.profile), ""]
    if results.notes:
        out += ["## Notes", "", *[f"- {note}" for note in results.notes], ""]
    out += [
        "## Measured apart",
        "",
        "- [DENY_MEMORY.md](DENY_MEMORY.md): the deny memory's cost (`python -m bench.deny_memory`)",
        "- [TRACING.md](TRACING.md): tracing's cost (`python -m bench.tracing`)",
        "",
    ]
    return "\n".join(out)
