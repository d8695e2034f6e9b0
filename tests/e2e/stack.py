"""Envoy (the deploy/envoy configuration) -> sidecar process -> an OPA, in front of the
echo upstream: the pieces the end-to-end tests assemble."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import EnvoyProcess, SidecarProcess, local_addresses, start_envoy, start_sidecar
from deploy.render import render_envoy

EXT_AUTHZ_STATS = "http.ingress_http.ext_authz."
T = TypeVar("T")


@dataclass
class Stack:
    upstream: EchoUpstream
    sidecar: SidecarProcess
    envoy: EnvoyProcess
    workdir: Path

    def logs(self) -> str:
        return f"{self.envoy.all_logs()}\n{self.sidecar.all_logs()}"

    def authz_counters(self) -> dict[str, int]:
        """Envoy's ext_authz counters (`ok`, `denied`, `error`, `failure_mode_allowed`, ...)."""
        return {
            name.removeprefix(EXT_AUTHZ_STATS): value
            for name, value in self.envoy.counters(EXT_AUTHZ_STATS).items()
        }

    def access_log_line(self, path: str) -> dict[str, Any]:
        """The access log entry of the one request to `path` (waits for Envoy's flush)."""
        return wait_for(lambda: _only(e for e in self.envoy.access_log() if e["path"] == path))

    def decision(self, path: str) -> dict[str, Any]:
        """The sidecar's decision log entry of the one check of `path`."""
        return wait_for(lambda: _only(e for e in self.sidecar.decisions() if e.get("path") == path))


def _only(entries: Any) -> Any:
    found = list(entries)
    assert len(found) <= 1, found
    return found[0] if found else None


def wait_for(probe: Callable[[], T | None], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while (result := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing after {timeout} s")
        time.sleep(0.02)
    return result


def fail_open(config_yaml: str) -> str:
    """The same configuration with Envoy's `failure_mode_allow: true`, and nothing else changed."""
    config = yaml.safe_load(config_yaml)
    [listener] = config["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [ext_authz] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    assert ext_authz["typed_config"]["failure_mode_allow"] is False
    ext_authz["typed_config"]["failure_mode_allow"] = True
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def running_stack(
    opa_url: str,
    *,
    envoy_fail_open: bool = False,
    sidecar_on_unix_socket: bool = False,
    sidecar_args: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Upstream, sidecar and Envoy, all on free ports; everything stopped and removed after."""
    # Short: unix socket paths are limited to about 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="e2e-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        upstream = cleanup.enter_context(EchoUpstream())
        grpc_addr = f"unix://{workdir / 'authz.sock'}" if sidecar_on_unix_socket else None
        sidecar = start_sidecar(opa_url, workdir, grpc_addr=grpc_addr, extra_args=sidecar_args)
        cleanup.callback(sidecar.stop)
        config = render_envoy(local_addresses(upstream.addr, sidecar.grpc_addr))
        envoy = start_envoy(fail_open(config) if envoy_fail_open else config, workdir)
        cleanup.callback(envoy.stop)
        yield Stack(upstream, sidecar, envoy, workdir)
