"""The linter's reading against Envoy 1.40's, live: each error on
fixtures/envoy/reading.yaml lets a request through that the sidecar denied, and
path-not-normalized's claim (the check gets the path as written) holds."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import yaml

from sidecar.lint.findings import Severity
from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.sidecar import running_sidecar
from tests.lint.helpers import FIXTURES, lint
from tests.lint.test_envoy_behaviour import _get, running_envoy

FIXTURE = FIXTURES / "envoy/reading.yaml"
BACKEND_PORT = "port_value: 19998"
SIDECAR_PORT = "port_value: 9191"
DOTS = "/public/../admin"

# listener -> [(path, status Envoy 1.40 answers)] while the policy denies everything.
OBSERVED: dict[str, list[tuple[str, int]]] = {
    "control": [("/", 403)],
    "camel_fail_open": [("/", 200)],  # its sidecar cluster is unreachable
    "wrapped_per_route": [("/open", 200), ("/", 403)],
    "default_chain": [("/", 200)],  # served by the backend through tcp_proxy
    "raw_path": [(DOTS, 403)],
}
# The error rules the linter reports on each listener.
ERRORS = {
    "camel_fail_open": {"failure-mode-allow"},
    "wrapped_per_route": {"per-route-disabled"},
    "default_chain": {"missing-ext-authz"},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_linter_reports_an_error_on_exactly_the_bypassing_listeners() -> None:
    names = [item["name"] for item in yaml.safe_load(FIXTURE.read_text())["static_resources"]["listeners"]]
    found: dict[str, set[str]] = {}
    raw: set[str] = set()
    for finding in lint(FIXTURE).findings:
        listener = names[int(finding.path.split("/")[3])]
        if finding.severity is Severity.ERROR:
            found.setdefault(listener, set()).add(finding.rule)
        if finding.rule == "path-not-normalized":
            raw.add(listener)
    assert found == ERRORS
    assert raw == {"raw_path"}


async def test_envoy_lets_through_what_the_linter_reports(tmp_path: Path) -> None:
    with FaultOpa() as opa:
        opa.set(Behaviour.json({"result": False}))
        async with running_sidecar(opa.url) as sidecar:
            text = FIXTURE.read_text().replace(SIDECAR_PORT, f"port_value: {sidecar.sidecar.grpc_port}")
            text = text.replace(BACKEND_PORT, f"port_value: {free_port()}")
            async with running_envoy(text, tmp_path) as ports:
                seen = {
                    name: [(path, (await asyncio.to_thread(_get, ports[name], path))[0]) for path, _ in asks]
                    for name, asks in OBSERVED.items()
                }
                await asyncio.to_thread(_get, ports["control"], DOTS)
        checked = [
            request.json()["input"]["attributes"]["request"]["http"]["path"] for request in opa.requests
        ]
    assert seen == OBSERVED
    # Asked in order: control "/", wrapped_per_route "/", raw_path, control again.
    assert checked == ["/", "/", DOTS, "/admin"]


async def test_a_cache_before_ext_authz_serves_requests_never_checked(tmp_path: Path) -> None:
    """Envoy 1.40's cache filter, placed before ext_authz, answered from the
    upstream even on a miss, and ext_authz was never asked."""
    fixture = FIXTURES / "envoy/cache-first.yaml"
    rules = {(f.rule, f.severity) for f in lint(fixture).findings}
    assert ("serves-before-ext-authz", Severity.ERROR) in rules
    with FaultOpa() as opa:
        opa.set(Behaviour.json({"result": False}))
        async with running_sidecar(opa.url) as sidecar:
            text = fixture.read_text().replace(SIDECAR_PORT, f"port_value: {sidecar.sidecar.grpc_port}")
            text = text.replace(BACKEND_PORT, f"port_value: {free_port()}")
            async with running_envoy(text, tmp_path) as ports:
                answers = [await asyncio.to_thread(_get, ports["cached"], "/report") for _ in range(2)]
            decisions = sidecar.decisions()
    assert answers == [(200, "upstream reached")] * 2
    assert decisions == [] and opa.requests == []
