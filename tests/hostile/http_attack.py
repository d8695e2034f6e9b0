"""Envoy's checks while hostile clients work on the sidecar's HTTP listeners.

The stack: a fault OPA that denies everything, the echo upstream, the sidecar
(run by tests/hostile/lag_probe.py, which records every event-loop stall) and
a real Envoy configured to fail open. Any request that reaches the upstream
was let through; any Envoy `ext_authz.error` is a check answered too late.

    python -m tests.hostile.http_attack [--seconds 20] [--sidecar-tree DIR] [--old-layout] [--realtime]

prints the figures of docs/reliability.md. `--sidecar-tree` runs the sidecar
package of another checkout (e.g. an older commit unpacked with git archive);
`--old-layout` attacks a sidecar whose one HTTP listener served everything,
with aiohttp's limits and a 16 MiB body. `--realtime` gives the sidecar, Envoy
and OPA real-time scheduling (needs CAP_SYS_NICE) while the attackers and the
checking clients keep the ordinary one: on a machine shared with other work,
this separates what the attack does to the sidecar from what the machine's
other load does (docs/reliability.md, "A starved sidecar misses Envoy's
deadline").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import EnvoyProcess, free_port, local_addresses, start_envoy
from deploy.render import ENVOY_HTTP_TEMPLATE, ENVOY_TEMPLATE, render_envoy
from sidecar.config import Settings
from tests.adversarial.process_monitor import sample
from tests.e2e.stack import EXT_AUTHZ_STATS, fail_open
from tests.fault_opa import Behaviour, FaultOpa
from tests.hostile.http_attackers import LargestRequests, SlowConnections, Target, padded_head, worst_json
from tests.hostile.raw_http import exchange

REPO_ROOT = Path(__file__).resolve().parents[2]
LAG_PROBE = REPO_ROOT / "tests" / "hostile" / "lag_probe.py"
ENVOY_CHECK_TIMEOUT_S = 0.25  # the shipped configuration's grpc_service timeout


@dataclass
class Listeners:
    """Where the sidecar under test serves HTTP, and the largest request each takes."""

    authz: tuple[str, int]
    probes: tuple[str, int]
    max_body: int
    max_header_bytes: int
    max_headers: int


@dataclass
class Figures:
    # The longest stall of the loop after one request on an idle sidecar: as
    # seen (wall clock) and the part the sidecar's own thread was running.
    single_request_stall_ms: dict[str, float] = field(default_factory=dict)
    single_request_own_stall_ms: dict[str, float] = field(default_factory=dict)
    checks: int = 0
    let_through: int = 0
    envoy_errors: int = 0
    late: int = 0  # answered to the client after Envoy's check timeout plus slack
    statuses: dict[str, int] = field(default_factory=dict)
    slowest_check_ms: float = 0.0
    stall_under_attack_ms: float = 0.0
    own_stall_under_attack_ms: float = 0.0
    stalls_over_50ms: int = 0
    longest_gc_ms: float = 0.0
    rss_idle_mib: float = 0.0
    rss_peak_mib: float = 0.0
    attack_answers: dict[str, int] = field(default_factory=dict)
    slow_connections_opened: int = 0
    probe_failures: int = 0


@dataclass(frozen=True)
class Stall:
    late_s: float
    cpu_s: float  # what the loop's thread ran meanwhile; the rest is the machine's

    @property
    def own_s(self) -> float:
        return min(self.late_s, self.cpu_s)


class WatchedSidecar:
    def __init__(self, process: subprocess.Popen[bytes], lag_file: Path, stderr: Path) -> None:
        self.process = process
        self.lag_file = lag_file
        self.stderr = stderr

    def _read(self) -> dict[str, list[list[float]]]:
        try:
            found: dict[str, list[list[float]]] = json.loads(self.lag_file.read_text())
            return found
        except (OSError, ValueError):
            return {"stalls": [], "gc": []}

    def stalls(self, since: float, until: float) -> list[Stall]:
        return [Stall(late, cpu) for at, late, cpu in self._read()["stalls"] if since <= at <= until]

    def collections(self, since: float, until: float) -> list[float]:
        return [took for at, _, took in self._read()["gc"] if since <= at <= until]

    def rss_mib(self) -> float:
        return sample(self.process.pid).rss_kib / 1024


@contextlib.contextmanager
def watched_sidecar(
    opa_url: str, workdir: Path, listeners: Listeners, old_layout: bool, tree: Path | None
) -> Iterator[tuple[WatchedSidecar, str]]:
    grpc_addr = f"127.0.0.1:{free_port()}"
    command = [sys.executable, str(LAG_PROBE), str(workdir / "lag.json"), "serve", "--opa-url", opa_url]
    command += ["--grpc-addr", grpc_addr, "--http-addr", "{}:{}".format(*listeners.authz)]
    if not old_layout:
        command += ["--probe-addr", "{}:{}".format(*listeners.probes)]
        command += ["--http-max-body-bytes", str(listeners.max_body)]
    roots = [str(tree)] if tree else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*roots, str(REPO_ROOT)])}
    stderr = workdir / "sidecar.log"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=err, cwd=tree or REPO_ROOT, env=env
        )
    sidecar = WatchedSidecar(process, workdir / "lag.json", stderr)
    try:
        deadline = time.monotonic() + 30
        while "serving ext_authz v3 on" not in stderr.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sidecar did not start:\n{stderr.read_text(errors='replace')}")
            time.sleep(0.05)
        yield sidecar, grpc_addr
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def largest_requests(listeners: Listeners) -> list[Target]:
    body = worst_json(listeners.max_body)
    heads = listeners.max_header_bytes - 1024, listeners.max_headers - 8
    check = padded_head("POST", "/v1/check", *heads, len(body)) + body
    http_mode = padded_head("POST", "/ext_authz/orders", *heads, len(body)) + body
    scrape = padded_head("GET", "/metrics", min(listeners.max_header_bytes, 16 << 10) - 1024, 32, 0)
    return [
        Target("/v1/check", listeners.authz, check),
        Target("/ext_authz", listeners.authz, http_mode),
        Target("/metrics", listeners.probes, scrape),
    ]


def realtime_allowed() -> bool:
    """Whether this process may hand out real-time scheduling (CAP_SYS_NICE)."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    except PermissionError:
        return False
    os.sched_setscheduler(0, policy, param)
    return True


def realtime(pid: int) -> None:
    """SCHED_RR for every thread of `pid`; threads it starts later inherit it."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setscheduler(int(task), os.SCHED_RR, os.sched_param(10))


def envoy_checks(envoy: EnvoyProcess, stop: threading.Event, figures: Figures, lock: threading.Lock) -> None:
    statuses: Counter[int] = Counter()
    while not stop.is_set():
        started = time.monotonic()
        try:
            status = envoy.request("GET", "/orders/under-attack", timeout=5).status
        except OSError:
            status = 0
        took = time.monotonic() - started
        with lock:
            figures.checks += 1
            figures.slowest_check_ms = max(figures.slowest_check_ms, took * 1000)
            figures.late += took > ENVOY_CHECK_TIMEOUT_S + 0.25
            statuses[status] += 1
        stop.wait(0.005)
    with lock:
        for status, count in statuses.items():
            figures.statuses[str(status)] = figures.statuses.get(str(status), 0) + count


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _default_limits() -> dict[str, int]:
    names = ("http_max_body_bytes", "http_max_header_bytes", "http_max_headers")
    return {f.name: f.default for f in fields(Settings) if f.name in names}  # type: ignore[misc]


def measure(
    seconds: float,
    tree: Path | None = None,
    old_layout: bool = False,
    max_body: int | None = None,
    real_time: bool = False,
    http_mode: bool = False,
) -> Figures:
    """`http_mode`: Envoy asks the sidecar's HTTP checks listener (the one under
    attack) instead of its gRPC port."""
    limits = _default_limits()
    if max_body is not None:
        limits["http_max_body_bytes"] = max_body
    listeners = Listeners(
        authz=("127.0.0.1", free_port()),
        probes=("127.0.0.1", free_port()),
        max_body=16 << 20 if old_layout else limits["http_max_body_bytes"],
        max_header_bytes=limits["http_max_header_bytes"],
        max_headers=100 if old_layout else limits["http_max_headers"],
    )
    if old_layout:
        listeners.probes = listeners.authz
    figures = Figures()
    workdir = Path(tempfile.mkdtemp(prefix="attack-"))
    with contextlib.ExitStack() as stack:
        if real_time:  # OPA's and the upstream's threads inherit it
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
        opa = stack.enter_context(FaultOpa())
        opa.set(Behaviour.json({"result": False}))
        upstream = stack.enter_context(EchoUpstream())
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # the clients do not
        watched = watched_sidecar(opa.url, workdir, listeners, old_layout, tree)
        sidecar, grpc_addr = stack.enter_context(watched)
        authz_addr = "{}:{}".format(*listeners.authz) if http_mode else grpc_addr
        template = ENVOY_HTTP_TEMPLATE if http_mode else ENVOY_TEMPLATE
        envoy = start_envoy(
            fail_open(render_envoy(local_addresses(upstream.addr, authz_addr), template)), workdir
        )
        stack.callback(envoy.stop)
        if real_time:
            for pid in (sidecar.process.pid, envoy.process.pid):
                realtime(pid)
        targets = largest_requests(listeners)

        # One request at a time on an idle sidecar: the stall each one causes.
        for target in targets:
            seen: list[Stall] = []
            for _ in range(5):
                since = time.time()
                exchange(target.address, target.request, timeout=60)
                time.sleep(0.3)
                seen += sidecar.stalls(since, time.time())
            figures.single_request_stall_ms[target.name] = _ms(max((s.late_s for s in seen), default=0))
            figures.single_request_own_stall_ms[target.name] = _ms(max((s.own_s for s in seen), default=0))
        figures.rss_idle_mib = round(sidecar.rss_mib(), 1)

        counters_before = envoy.counters(EXT_AUTHZ_STATS)
        upstream_before = len(upstream.received)
        flood = LargestRequests(targets, threads=2)
        slow = SlowConnections(
            [listeners.authz, listeners.probes],
            count=300,
            bodies_at=(listeners.authz,),  # where bodies are read
            body_bytes=listeners.max_body,
        )
        stop, lock = threading.Event(), threading.Lock()
        clients = [threading.Thread(target=envoy_checks, args=(envoy, stop, figures, lock)) for _ in range(4)]
        started = time.time()
        flood.start()
        slow.start()
        for client in clients:
            client.start()
        peak = sidecar.rss_mib()
        while time.time() - started < seconds:
            peak = max(peak, sidecar.rss_mib())
            try:
                probe = exchange(listeners.probes, b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n", timeout=1)
                figures.probe_failures += probe.status != 200
            except OSError:
                figures.probe_failures += 1
            time.sleep(0.05)
        stop.set()
        for client in clients:
            client.join(30)
        slow.stop()
        flood.stop()
        ended = time.time()
        counters = envoy.counters(EXT_AUTHZ_STATS)
        figures.envoy_errors = counters.get(EXT_AUTHZ_STATS + "error", 0) - counters_before.get(
            EXT_AUTHZ_STATS + "error", 0
        )
        figures.let_through = len(upstream.received) - upstream_before
        stalls = sidecar.stalls(started, ended)
        figures.stall_under_attack_ms = _ms(max((s.late_s for s in stalls), default=0))
        figures.own_stall_under_attack_ms = _ms(max((s.own_s for s in stalls), default=0))
        figures.stalls_over_50ms = sum(s.late_s > 0.05 for s in stalls)
        figures.longest_gc_ms = _ms(max(sidecar.collections(started, ended), default=0))
        figures.rss_peak_mib = round(peak, 1)
        figures.attack_answers = {f"{name} {status}": n for (name, status), n in flood.statuses.items()}
        figures.slow_connections_opened = slow.opened
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sidecar-tree", type=Path)
    parser.add_argument("--old-layout", action="store_true")
    parser.add_argument("--max-body", type=int, help="the sidecar's --http-max-body-bytes")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--http-mode", action="store_true", help="Envoy asks the HTTP listener under attack")
    args = parser.parse_args()
    figures = measure(
        args.seconds, args.sidecar_tree, args.old_layout, args.max_body, args.realtime, args.http_mode
    )
    print(json.dumps(asdict(figures), indent=2))


if __name__ == "__main__":
    main()
