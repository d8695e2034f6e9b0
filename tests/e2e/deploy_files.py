"""Reading the deployment files the way their consumers do: Envoy's addresses and
ext_authz settings, and a sidecar command line as `opa-sidecar serve` parses it."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.local_stack import envoy_binary
from sidecar.cli import build_parser
from sidecar.config import Settings, settings_from


def validate_envoy_config(path: Path) -> None:
    """`envoy --mode validate`: the whole bootstrap is parsed and every extension built."""
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "--config-path", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{path} does not validate:\n{result.stdout}\n{result.stderr}"
    assert "OK" in result.stdout + result.stderr


def _address(address: dict[str, Any]) -> str:
    if "pipe" in address:
        return f"unix://{address['pipe']['path']}"
    socket = address["socket_address"]
    return f"{socket['address']}:{socket['port_value']}"


@dataclass(frozen=True)
class EnvoyConfig:
    raw: dict[str, Any]

    @classmethod
    def load(cls, text: str) -> EnvoyConfig:
        return cls(yaml.safe_load(text))

    @property
    def listener(self) -> dict[str, Any]:
        [listener] = self.raw["static_resources"]["listeners"]
        return dict(listener)

    @property
    def connection_manager(self) -> dict[str, Any]:
        return dict(self.listener["filter_chains"][0]["filters"][0]["typed_config"])

    @property
    def ext_authz(self) -> dict[str, Any]:
        [ext_authz] = [
            f["typed_config"]
            for f in self.connection_manager["http_filters"]
            if f["name"] == "envoy.filters.http.ext_authz"
        ]
        return dict(ext_authz)

    def cluster_address(self, name: str) -> str:
        [cluster] = [c for c in self.raw["static_resources"]["clusters"] if c["name"] == name]
        [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        return _address(endpoint["endpoint"]["address"])

    @property
    def listen_address(self) -> str:
        return _address(self.listener["address"])

    @property
    def admin_address(self) -> str:
        return _address(self.raw["admin"]["address"])

    @property
    def sidecar_address(self) -> str:
        return self.cluster_address(self.ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"])

    @property
    def upstream_address(self) -> str:
        routes = self.connection_manager["route_config"]["virtual_hosts"][0]["routes"]
        [cluster] = {route["route"]["cluster"] for route in routes}
        return self.cluster_address(cluster)


def sidecar_settings(args: Sequence[str]) -> Settings:
    """Parse `opa-sidecar serve ARGS` with the real parser; unknown or bad flags fail."""
    try:
        parsed = build_parser().parse_args(["serve", *args])
    except SystemExit as exc:
        raise AssertionError(f"opa-sidecar serve rejects {list(args)}") from exc
    return settings_from(parsed, env={})


def host_port(url_or_addr: str) -> str:
    """`http://h:p` or `h:p` -> `h:p`."""
    return url_or_addr.removeprefix("http://").removeprefix("https://").rstrip("/")
