"""Header values beyond ASCII through the shipped configurations of both modes, over
HTTP/1.1 and (gRPC mode, whose listener takes it) HTTP/2. Envoy hands a text check '!'
for each byte that is not UTF-8 while the upstream gets the byte (docs/envoy-bodies.md);
gRPC mode sends the bytes instead (encode_raw_headers). Either way the sidecar refuses a
value the application would read otherwise (bad_request, 400) before OPA is asked; any
other value reaches the policy exactly as the upstream gets it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import EnvoyProcess
from tests.e2e.envoy_wire import Reply, h1_request, h2_request
from tests.e2e.stack import Stack
from tests.e2e.two_modes import MODE_PROTOCOLS, MODES, running_mode_stack
from tests.fault_opa import FaultOpa

NOT_UTF8 = {
    "latin-1": b"caf\xe9",
    "lone-continuation": b"\x80abc",
    "cut-sequence": b"token\xc3",
    "overlong": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "past-u10ffff": b"\xf4\x90\x80\x80",
}
UTF8 = {
    "ascii": b"Bearer abc.def-123",
    "accents": "été".encode(),
    "emoji": "\U0001f600".encode(),
    "replacement-character": "\ufffd".encode(),
    "last-code-point": "\U0010ffff".encode(),
    "exclamation": b"caf!",
}


def _client(protocol: str, value: bytes) -> Callable[[int], Reply]:
    if protocol == "http1":
        return lambda port: h1_request(port, b"GET /h HTTP/1.1\r\nhost: shop\r\nx-name: " + value)
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"shop"), (b":path", b"/h")]
    return lambda port: h2_request(port, [*headers, (b"x-name", value)])


@dataclass
class ModeStack:
    mode: str
    stack: Stack

    @property
    def upstream(self) -> EchoUpstream:
        return self.stack.upstream

    @property
    def envoy(self) -> EnvoyProcess:
        return self.stack.envoy


@pytest.fixture(scope="module", params=MODES)
def mode_stack(request: pytest.FixtureRequest, _fault_opa_session: FaultOpa) -> Iterator[ModeStack]:
    with running_mode_stack(request.param, _fault_opa_session.url) as stack:
        yield ModeStack(request.param, stack)


@pytest.mark.parametrize(("mode_stack", "protocol"), MODE_PROTOCOLS, indirect=["mode_stack"])
@pytest.mark.parametrize("value", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_a_header_value_outside_utf8_is_refused_before_opa_is_asked(
    mode_stack: ModeStack, fault_opa: FaultOpa, protocol: str, value: bytes
) -> None:
    received = len(mode_stack.upstream.received)
    reply = _client(protocol, value)(mode_stack.envoy.port)
    assert (reply.status, reply.body) == (400, b"bad request\n")
    assert not [r for r in fault_opa.requests if r.path.startswith("/v1/data/")]
    assert len(mode_stack.upstream.received) == received


@pytest.mark.parametrize(("mode_stack", "protocol"), MODE_PROTOCOLS, indirect=["mode_stack"])
@pytest.mark.parametrize("value", UTF8.values(), ids=UTF8.keys())
def test_a_header_value_in_utf8_reaches_the_policy_as_the_upstream_gets_it_or_is_refused(
    mode_stack: ModeStack, fault_opa: FaultOpa, protocol: str, value: bytes
) -> None:
    received = len(mode_stack.upstream.received)
    reply = _client(protocol, value)(mode_stack.envoy.port)
    asked = [r for r in fault_opa.requests if r.path.startswith("/v1/data/")]
    reached = mode_stack.upstream.received[received:]
    # Beyond ASCII applications read Latin-1 and the policy UTF-8; a '!' is exact only
    # where the check carries bytes (gRPC mode), not text (HTTP mode).
    if not value.isascii() or (b"!" in value and mode_stack.mode == "http"):
        # The sidecar may refuse what it cannot vouch for; then nothing gets through.
        assert reply.status == 400 and not asked and not reached, reply
        return
    [opa_request] = asked
    [echo] = reached
    policy_value = opa_request.json()["input"]["attributes"]["request"]["http"]["headers"]["x-name"]
    assert policy_value.encode() == value
    # The echo application reads header bytes as latin-1, one character a byte.
    assert [v.encode("latin-1") for v in echo["headers"]["x-name"]] == [value]
