"""The sidecar's memory after each hostile-client window, repeated: whether what an
attack makes it hold comes back once the attack stops.

    python -m tests.adversarial.hostile_memory [--kinds hostile-rapid-reset] [--windows 10] [--seconds 5]
    python -m tests.adversarial.hostile_memory --floor uvloop   # or asyncio

One sidecar in front of a fault OPA that denies everything; each window of the chaos run's
hostile clients (tests.adversarial.chaos_hostile) is followed by a quiet pause, then the
sidecar's RSS and open descriptors are read. Prints one line per window. With --floor the
gRPC attacks go to bench/floor.py instead, a bare grpc.aio server on that event loop: what
it keeps is gRPC's own.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from deploy.local_stack import REPO_ROOT, free_port, start_sidecar
from tests.adversarial.chaos_hostile import HostileClients
from tests.adversarial.process_monitor import sample
from tests.fault_opa import Behaviour, FaultOpa

QUIET_S = 2.0
FLOOR_START_S = 15.0


@contextlib.contextmanager
def _sidecar(workdir: Path) -> Iterator[tuple[int, HostileClients]]:
    with FaultOpa() as opa:
        opa.set(Behaviour.json({"result": False}))
        sidecar = start_sidecar(opa.url, workdir)
        try:
            clients = HostileClients("memory", sidecar.grpc_addr, sidecar.http_addr, sidecar.probe_addr)
            yield sidecar.process.pid, clients
        finally:
            sidecar.stop()


@contextlib.contextmanager
def _floor(loop: str) -> Iterator[tuple[int, HostileClients]]:
    port = free_port()
    command = [sys.executable, "-m", "bench.floor", "--port", str(port), "--loop", loop]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + FLOOR_START_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("bench.floor did not start") from None
                time.sleep(0.05)
        yield process.pid, HostileClients("floor", f"127.0.0.1:{port}", "", "")
    finally:
        process.terminate()
        process.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.adversarial.hostile_memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--kinds", default="hostile-rapid-reset", help="window kinds, comma-separated")
    parser.add_argument("--windows", type=int, default=10, help="rounds of every kind")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each window")
    parser.add_argument(
        "--floor", choices=("asyncio", "uvloop"), help="attack bench/floor.py on this loop instead"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hostile-memory-"))
    try:
        with _floor(args.floor) if args.floor else _sidecar(workdir) as (pid, attacks):
            start = sample(pid)
            print(f"before: RSS {start.rss_kib / 1024:.1f} MiB, {start.fds} fds", flush=True)
            for round_ in range(1, args.windows + 1):
                for kind in args.kinds.split(","):
                    attacks.inject(kind, args.seconds)
                    time.sleep(QUIET_S)
                    now = sample(pid)
                    print(f"{round_} {kind}: RSS {now.rss_kib / 1024:.1f} MiB, {now.fds} fds", flush=True)
            print({kind: dict(counts) for kind, counts in attacks.activity.items()})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
