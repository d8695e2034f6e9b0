"""Fixtures for the end-to-end tests: a real Envoy with the configuration of deploy/envoy,
the sidecar as a process, an OPA, and the echo upstream."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, running_stack
from tests.fault_opa import FaultOpa
from tests.fixtures.opa import OpaProcess, start_opa

E2E_POLICIES = Path(__file__).parent / "policies"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, show the logs of every stack the test used (Envoy's log above all)."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Stack):
                report.sections.append((f"logs of {name}", value.logs()))
    return report


@pytest.fixture(scope="module")
def e2e_opa() -> Iterator[OpaProcess]:
    """An OPA serving tests/e2e/policies, warmed up."""
    opa = start_opa([E2E_POLICIES])
    # The first evaluation compiles the policy; keep it out of the tests' 150 ms budget.
    opa.request("POST", "/v1/data/envoy/authz/allow", body=json.dumps({"input": {}}))
    yield opa
    opa.stop()


@pytest.fixture(scope="module")
def e2e_stack(e2e_opa: OpaProcess) -> Iterator[Stack]:
    """Fail-closed Envoy -> sidecar -> OPA serving tests/e2e/policies."""
    with running_stack(e2e_opa.url) as stack:
        yield stack


@pytest.fixture(scope="module")
def hostile_stack(_fault_opa_session: FaultOpa) -> Iterator[Stack]:
    """Envoy configured to fail OPEN -> sidecar -> the fault-injecting OPA."""
    with running_stack(_fault_opa_session.url, envoy_fail_open=True) as stack:
        yield stack
