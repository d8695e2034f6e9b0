"""Versions of the sidecar side by side in one run: ``python -m bench.compare REV [REV ...]``.

Each git revision (or ``.`` for the working tree) is exported to a temporary
directory and started as its own Z sidecar (asking nginx, the zero-cost OPA),
beside the floor. Points alternate between them, round after round, so a
change is measured against its base under the same machine load; the table
gives the median and range of each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import workload
from bench.cli import _concurrencies, _default_loadgen_cpu, _loadgen_cpu
from bench.loadgen import Load, h2load, require_tools
from bench.procs import BenchError, Service, cpu_seconds, free_port
from bench.services import REPO, Server, start_floor, start_nginx, wait_ready

FLOOR = "floor"


@dataclass
class Points:
    rates: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # CPU ms per check of the server
    errors: int = 0

    def add(self, load: Load, cpu_s: float) -> None:
        self.rates.append(load.rate)
        self.p50s.append(load.p50_ms)
        self.cpu_ms.append(cpu_s * 1000 / load.completed if load.completed else float("nan"))
        self.errors += load.errors


def export(revision: str, into: Path) -> Path:
    """The tree of ``revision`` (``.``: the working tree as it is) in a directory of its own."""
    if revision == ".":
        return REPO
    target = into / revision.replace("/", "_")
    target.mkdir()
    archive = into / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    archive.unlink()
    return target


def start_tree_sidecar(name: str, tree: Path, opa_port: int, workdir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "sidecar", "serve", "--opa-url", f"http://127.0.0.1:{opa_port}"]
    argv += ["--grpc-addr", f"127.0.0.1:{port}", "--log-level", "warning"]
    argv += ["--http-addr", f"127.0.0.1:{free_port()}", "--probe-addr", f"127.0.0.1:{free_port()}"]
    return Server(Service(name, argv, workdir, tree), port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="git revisions; '.' for the working tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point (default 5)")
    parser.add_argument("--concurrency", type=_concurrencies, default=(1, 16))
    parser.add_argument("--loadgen-cpu", type=_loadgen_cpu, default=_default_loadgen_cpu(), metavar="CPU")
    args = parser.parse_args(argv)
    try:
        tools = require_tools(["h2load", "nginx", *(["taskset"] if args.loadgen_cpu is not None else [])])
    except BenchError as exc:
        print(f"bench.compare: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        workdir = Path(tmp)
        frame = workdir / "check.grpc"
        frame.write_bytes(workload.check_request_frame())
        started: list[Server] = []
        try:
            nginx = start_nginx(tools["nginx"], workdir)
            started.append(nginx)
            servers = {FLOOR: start_floor(workdir)}
            started.append(servers[FLOOR])
            for n, revision in enumerate(args.revisions):
                tree = export(revision, workdir)
                servers[revision] = start_tree_sidecar(f"sidecar-{n}", tree, nginx.port, workdir)
                started.append(servers[revision])
            for server in started:
                wait_ready(server)

            def drive(port: int, concurrency: int, seconds: float) -> Load:
                return h2load(
                    tools["h2load"],
                    f"http://127.0.0.1:{port}{workload.CHECK_PATH}",
                    data=frame,
                    headers=workload.GRPC_HEADERS,
                    concurrency=concurrency,
                    duration=seconds,
                    log_file=workdir / "h2load.log",
                    timeout=seconds + 60,
                    cpu=args.loadgen_cpu,
                )

            for server in servers.values():
                drive(server.port, 4, 2.0)  # warm-up
            points: dict[tuple[str, int], Points] = {}
            names = list(servers)
            for round_number in range(args.rounds):
                order = names if round_number % 2 == 0 else names[::-1]
                for concurrency in args.concurrency:
                    for name in order:
                        server = servers[name]
                        before = cpu_seconds(server.pid)
                        load = drive(server.port, concurrency, args.duration)
                        cpu = cpu_seconds(server.pid) - before
                        points.setdefault((name, concurrency), Points()).add(load, cpu)
        except BenchError as exc:
            print(f"bench.compare: {exc}", file=sys.stderr)
            return 1
        finally:
            for server in reversed(started):
                server.service.stop()
    print(f"{args.rounds} rounds of {args.duration:g} s points; median (range)")
    print("| version | concurrency | checks/s | p50 ms | CPU ms / check | errors |")
    print("|---|---|---|---|---|---|")
    for concurrency in args.concurrency:
        for name in names:
            p = points[(name, concurrency)]
            print(
                f"| {name} | {concurrency} | {statistics.median(p.rates):,.0f} "
                f"({min(p.rates):,.0f}-{max(p.rates):,.0f}) | {statistics.median(p.p50s):.3f} | "
                f"{statistics.median(p.cpu_ms):.3f} ({min(p.cpu_ms):.3f}-{max(p.cpu_ms):.3f}) | {p.errors} |"
            )
    return 0 if all(p.errors == 0 for p in points.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
