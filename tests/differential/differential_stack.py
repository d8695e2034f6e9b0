"""Real Envoy (a shipped configuration, gRPC or HTTP mode) -> the sidecar process -> the
recording fault OPA, in front of the parsing upstream; one per test module."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.local_stack import EnvoyProcess, SidecarProcess, local_addresses, start_envoy, start_sidecar
from deploy.render import ENVOY_HTTP_TEMPLATE, ENVOY_TEMPLATE, render_envoy
from tests.differential.parsing_upstream import ParsingUpstream
from tests.fault_opa import FaultOpa

MODES = {"grpc": ENVOY_TEMPLATE, "http": ENVOY_HTTP_TEMPLATE}
# What each mode's listener takes: the HTTP-mode one HTTP/1.1 only (codec_type: HTTP1).
PROTOCOLS = {"grpc": ("HTTP/1.1", "HTTP/2"), "http": ("HTTP/1.1",)}


@dataclass
class DifferentialStack:
    mode: str
    upstream: ParsingUpstream
    sidecar: SidecarProcess
    envoy: EnvoyProcess
    opa: FaultOpa

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS[self.mode]

    def logs(self) -> str:
        return f"{self.envoy.all_logs()}\n{self.sidecar.all_logs()}"


@contextlib.contextmanager
def differential_stack(mode: str, opa: FaultOpa) -> Iterator[DifferentialStack]:
    """The shipped template of `mode` rendered with this machine's free ports, nothing else changed."""
    workdir = Path(tempfile.mkdtemp(prefix="diff-"))  # short: unix socket paths are limited
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        upstream = cleanup.enter_context(ParsingUpstream())
        sidecar = start_sidecar(opa.url, workdir, http_addr="127.0.0.1:0" if mode == "http" else None)
        cleanup.callback(sidecar.stop)
        sidecar_addr = sidecar.http_addr if mode == "http" else sidecar.grpc_addr
        config = render_envoy(local_addresses(upstream.addr, sidecar_addr), MODES[mode])
        envoy = start_envoy(config, workdir)
        cleanup.callback(envoy.stop)
        yield DifferentialStack(mode, upstream, sidecar, envoy, opa)
