"""Hostile clients on the plaintext gRPC port, while a fail-open Envoy sends checks.

Anything in the pod's network namespace can reach the port. Whatever such a client
does, Envoy's checks are answered in time (no Envoy error, so nothing a fail-open
Envoy lets through) and the sidecar's memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import Stack, running_stack
from tests.fault_opa import Behaviour, FaultOpa
from tests.hostile.under_attack import AttackProcess, measure

ATTACK_SECONDS = 6.0
# Growth allowed while attacked: the Kubernetes manifest gives the sidecar 256 MiB.
MAX_RSS_GROWTH_MIB = 64.0


@pytest.fixture
def deny_everything_stack(fault_opa: FaultOpa) -> Iterator[Stack]:
    fault_opa.set(lambda request: Behaviour.json({"result": False}))
    with running_stack(fault_opa.url, envoy_fail_open=True) as stack:
        yield stack


@pytest.mark.parametrize("kind", ["rapid-reset", "unread-answers"])
def test_envoy_checks_hold_while_the_grpc_port_is_attacked(deny_everything_stack: Stack, kind: str) -> None:
    host, _, port = deny_everything_stack.sidecar.grpc_addr.rpartition(":")
    attack = AttackProcess(kind, host, int(port))

    report = measure(deny_everything_stack, attack, ATTACK_SECONDS, threads=4)

    print(report.summary(), attack.counts)
    assert report.requests > 0
    assert report.late_unexcused == 0, report.summary()
    assert report.rss_growth_mib < MAX_RSS_GROWTH_MIB, report.summary()
