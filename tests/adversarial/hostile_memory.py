"""The sidecar's memory after each hostile-client window, repeated: whether what an
attack makes it hold comes back once the attack stops.

    python -m tests.adversarial.hostile_memory [--kinds hostile-rapid-reset] [--windows 10] [--seconds 5]

One sidecar in front of a fault OPA that denies everything; each window of the chaos run's
hostile clients (tests.adversarial.chaos_hostile) is followed by a quiet pause, then the
sidecar's RSS and open descriptors are read. Prints one line per window.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.local_stack import start_sidecar
from tests.adversarial.chaos_hostile import HostileClients
from tests.adversarial.process_monitor import sample
from tests.fault_opa import Behaviour, FaultOpa

QUIET_S = 2.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.adversarial.hostile_memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--kinds", default="hostile-rapid-reset", help="window kinds, comma-separated")
    parser.add_argument("--windows", type=int, default=10, help="rounds of every kind")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each window")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hostile-memory-"))
    try:
        with FaultOpa() as opa:
            opa.set(Behaviour.json({"result": False}))
            sidecar = start_sidecar(opa.url, workdir)
            try:
                attacks = HostileClients("memory", sidecar.grpc_addr, sidecar.http_addr, sidecar.probe_addr)
                pid = sidecar.process.pid
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
                sidecar.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
