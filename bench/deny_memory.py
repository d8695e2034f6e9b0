"""The deny memory's cost per check: the pipeline with the memory off, on in
process, and on through a Redis-protocol store.

    python -m bench.deny_memory [--checks N] [--store redis://127.0.0.1:6379/0]

Checks run one after another through Authorizer.check (protobuf parsing, the
input document, the memory, the verdict) against an OPA stand-in that answers
at once, so the figures are the sidecar's own CPU time and the store's round
trip, without OPA or gRPC. Half the callers are denied once first, so the
measured checks include retries held by the memory and allows that consult it.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import uvloop

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar.authorizer import Authorizer
from sidecar.config import Settings, parse_opa_url
from sidecar.deny_memory import build_deny_memory
from sidecar.metrics import Metrics
from sidecar.opa.client import OpaClient

CALLERS = 200


class InstantOpa:
    """Denies /admin, allows the rest, at once."""

    async def evaluate(self, body: bytes, deadline: float) -> dict[str, Any]:
        return {"result": b'"/admin' not in body}


def request(caller: int, path: str) -> bytes:
    message = CheckRequest()
    http = message.attributes.request.http
    http.method, http.path, http.host, http.scheme = "GET", path, "app.example", "http"
    message.attributes.source.principal = f"spiffe://example.org/ns/bench/sa/agent-{caller}"
    http.headers["authorization"] = f"Bearer token-{caller}"
    return message.SerializeToString()


async def measure(settings: Settings, checks: int) -> list[float]:
    memory = build_deny_memory(settings, Metrics())
    authorizer = Authorizer(
        cast(OpaClient, InstantOpa()), opa_timeout=1.0, max_inflight=10, deny_memory=memory
    )
    for caller in range(0, CALLERS, 2):  # half the callers have a remembered deny
        await authorizer.check(request(caller, "/admin"), None, f"warm-{caller}")
    workload = [request(n % CALLERS, "/admin" if n % 3 == 0 else f"/orders/{n % 7}") for n in range(checks)]
    seconds = []
    for n, body in enumerate(workload):
        started = time.perf_counter()
        await authorizer.check(body, None, str(n))
        seconds.append(time.perf_counter() - started)
    if memory is not None:
        await memory.close()
    return seconds


def summary(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    mean = statistics.fmean(seconds) * 1e6
    p50, p99 = ordered[len(ordered) // 2] * 1e6, ordered[int(len(ordered) * 0.99)] * 1e6
    return f"| {label} | {mean:.1f} | {p50:.1f} | {p99:.1f} |"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "redis-server is not installed: run scripts/install-system-tools.sh, or pass --store"
        )
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.02)
    process.kill()
    raise SystemExit("redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--store", help="a running store to use instead of starting redis-server")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-deny-"))
    key = workdir / "key"
    key.write_text("0123456789abcdef0123456789abcdef")
    redis = None
    store = args.store
    if store is None:
        redis, store = start_redis(workdir)
    base = Settings(opa_url=parse_opa_url("http://127.0.0.1:1"))
    variants = {
        "off": base,
        "on, in process (hold)": replace(base, deny_memory=60.0),
        "on, shared store (hold)": replace(
            base, deny_memory=60.0, deny_memory_store=store, deny_memory_key_file=str(key)
        ),
    }
    try:
        print("| deny memory | mean µs/check | p50 µs | p99 µs |")
        print("|---|---|---|---|")
        for label, settings in variants.items():
            seconds = uvloop.run(measure(settings, args.checks))
            print(summary(label, seconds))
    finally:
        if redis is not None:
            redis.kill()
            redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
