"""Bodies around Envoy's buffer limit (8191, 8192, 8193 and 20000 bytes) with every framing
of docs/envoy-bodies.md that each mode's listener takes (HTTP/2 in gRPC mode only), through
the shipped configurations: whenever the upstream got more than the policy saw, the policy
was told (`truncated_body`); when it was not told, it saw exactly the upstream's bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.observe_envoy import SIZES, Case, cases_for
from tests.e2e.stack import Stack
from tests.e2e.two_modes import MODES, running_mode_stack, send
from tests.fault_opa import FaultOpa


def json_body(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    body = b'{"p":"' + b"a" * (size - 8) + b'"}'
    assert len(body) == size
    return body


@pytest.fixture(scope="module", params=MODES)
def mode_stack(request: pytest.FixtureRequest, _fault_opa_session: FaultOpa) -> Iterator[Stack]:
    with running_mode_stack(request.param, _fault_opa_session.url) as stack:
        yield stack


MODE_CASES = [
    pytest.param(mode, case, id=f"{mode}-{case.name}") for mode in MODES for case in cases_for(mode)
]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("mode_stack", "case"), MODE_CASES, indirect=["mode_stack"])
def test_the_policy_knows_when_it_saw_less_than_the_upstream(
    mode_stack: Stack, fault_opa: FaultOpa, case: Case, size: int
) -> None:
    body = json_body(size)
    seen = send(mode_stack, fault_opa, lambda port: case.send(port, body))
    assert seen.reply.status == 200, seen.reply
    assert seen.upstream is not None
    upstream_body = seen.upstream["body"].encode()
    assert upstream_body == body  # the application always gets all of it
    policy_body = seen.policy_body()
    assert upstream_body.startswith(policy_body)
    truncated = seen.input["truncated_body"]
    if len(upstream_body) > len(policy_body):
        assert truncated is True
    if truncated is False:
        assert policy_body == upstream_body
        assert seen.input["parsed_body"] == json.loads(body)
    else:
        assert seen.input["parsed_body"] is None
