"""What a run measured, independent of how it is printed."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.loadgen import Load

# key -> (what runs, how it is driven, whose CPU and memory the row reports)
SETUPS: dict[str, tuple[str, str, str]] = {
    "F": ("floor: grpc.aio server, constant allow, no I/O", "h2load gRPC", "floor server"),
    "Z": ("sidecar, zero-cost OPA (nginx answering true)", "h2load gRPC", "sidecar"),
    "Z2": ("sidecar --workers 2, zero-cost OPA", "h2load gRPC", "sidecar (all workers)"),
    "R": ("sidecar, real OPA (the test server without one), rego/", "h2load gRPC", "sidecar"),
    "N": ("direct POST of the OPA input to nginx (Z's OPA)", "h2load HTTP/1.1", "nginx"),
    "O": ("direct POST of the OPA input to R's OPA", "h2load HTTP/1.1", "OPA"),
    "E0": ("Envoy alone, direct_response", "wrk HTTP/1.1", "Envoy"),
    "EZ": ("Envoy + ext_authz + sidecar (Z's OPA), direct_response", "wrk HTTP/1.1", "sidecar"),
}


@dataclass(frozen=True, slots=True)
class Row:
    setup: str
    concurrency: int
    load: Load
    server_cpu_s: float  # CPU of the process the row reports on, over the run
    server_rss_bytes: int  # its resident memory just after the run
    verified: str  # what the server itself says it answered
    ok: bool  # answers verified and no errors
    other_cpu_s: float = 0.0  # CPU used meanwhile by processes that are not part of the run
    backend_cpu_s: float | None = None  # CPU of the OPA the sidecar asked, when it is not free

    @property
    def other_load(self) -> float:
        """Cores' worth of CPU other processes took during the point."""
        return self.other_cpu_s / self.load.seconds if self.load.seconds else float("nan")

    @property
    def cpu_per_1k(self) -> float:
        return self.server_cpu_s * 1000 / self.load.completed if self.load.completed else float("nan")

    @property
    def backend_cpu_per_1k(self) -> float | None:
        if self.backend_cpu_s is None or not self.load.completed:
            return None
        return self.backend_cpu_s * 1000 / self.load.completed

    @property
    def loadgen_cpu_share(self) -> float:
        """Load generator CPU as a share of one core over the run."""
        return self.load.loadgen_cpu_s / self.load.seconds if self.load.seconds else float("nan")


@dataclass(frozen=True, slots=True)
class Soak:
    checks: int
    concurrency: int
    rss_start: int  # after a short warm-up
    rss_half: int
    rss_end: int
    rate: float
    verified: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Hotspot:
    name: str
    self_share: float
    total_share: float


@dataclass(frozen=True, slots=True)
class Profile:
    concurrency: int
    seconds: float
    samples: int
    checks: int
    self_top: list[Hotspot]  # Python pass, by leaf function
    total_top: list[Hotspot]  # Python pass, by function anywhere on the stack
    libraries: list[Hotspot]  # perf: share of the thread's CPU per binary (empty without perf)
    threads: list[tuple[str, float]]  # thread name, CPU seconds over the Python pass


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    soak: Soak | None = None
    profile: Profile | None = None
    notes: list[str] = field(default_factory=list)
    steal_share: float = 0.0
    opa: str = ""  # which OPA served R and O

    def row(self, setup: str, concurrency: int) -> Row | None:
        for row in self.rows:
            if row.setup == setup and row.concurrency == concurrency:
                return row
        return None

    def peak(self, setup: str) -> Row | None:
        rows = [r for r in self.rows if r.setup == setup]
        return max(rows, key=lambda r: r.load.rate) if rows else None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and (self.soak is None or self.soak.ok)
