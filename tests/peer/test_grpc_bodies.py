"""gRPC request bodies with a descriptor set, against the OPA-Envoy plugin given the same
set (its `proto-descriptor`): the echo policy sends back the input each built, so the
parsed message must be the same where the sidecar takes the call, and where it refuses
one (400, `bad_request`) the plugin must do exactly what the README says it does.

Only the plugin itself can show how protojson renders a message, so these tests need its
binary (`scripts/install-opa-envoy-plugin.sh`); without it they are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from sidecar.envoy.grpc_body import GrpcMethods
from tests.fixtures.grpc_messages import PLACE, Messages, frame, grpc_check, write_descriptor_set
from tests.fixtures.opa import OpaProcess
from tests.fixtures.sidecar import running_sidecar
from tests.peer.conftest import DECISION_PATH
from tests.peer.outcome import Outcome, ask_over_grpc, outcome_of
from tests.peer.plugin_process import PluginProcess, plugin_binary, start_plugin

pytestmark = pytest.mark.skipif(plugin_binary() is None, reason="the OPA-Envoy plugin is not installed")

ParsedBody = tuple[Any, bool]  # parsed_body, truncated_body


@dataclass(frozen=True)
class Case:
    name: str
    request: Callable[[Messages], CheckRequest]
    # None: the plugin parses the body as the sidecar does. Otherwise the sidecar refuses,
    # and this says what the plugin does: its (parsed_body, truncated_body), or "400".
    plugin: Callable[[Messages], ParsedBody | str] | None = None


def _call(payload: Callable[[Messages], bytes], **kwargs: Any) -> Callable[[Messages], CheckRequest]:
    def build(messages: Messages) -> CheckRequest:
        headers = {"x-peer-policy": "echo", **kwargs.pop("headers", {})}
        return grpc_check(payload(messages), headers=headers, **kwargs)

    return build


def _order(**fields: Any) -> Callable[[Messages], bytes]:
    return lambda m: frame(m.new("shop.v1.Order", **fields).SerializeToString())


def _rich(messages: Messages) -> bytes:
    message = messages.new(
        "shop.v1.Order",
        order_id='o-1 ünïcode "quoted" \u2028',
        total_cents=-(2**62),
        serial=2**64 - 1,
        small=-5,
        kind=2,
        token=b"\x00\xff\xfe\xfd",
        price=1234.5678,
        ratio=0.1,
        priority=0,
        gift=True,
        customer="ann",
        labels={"tier": "gold", "": "empty key"},
    )
    message.placed_at.seconds = 1767225600
    message.placed_at.nanos = 120_000
    message.lines.add(sku="a", quantity=3)
    message.lines.add()
    message.lines_by_sku["b"].quantity = -1
    message.parent.small = 1
    return frame(message.SerializeToString())


def _subnormals(messages: Messages) -> bytes:
    powers_of_two = [2.0**n for n in range(-149, 128, 3)]
    samples = [1e-45, 2.8e-45, 1.17e-38, 1.1754942e-38, 0.3, *powers_of_two]
    message = messages.new("shop.v1.Order", samples=samples)
    message.weights["w"] = 4.2e-45
    message.discount.value = 7e-45
    message.flagged[False].ratio = 1e-44
    return frame(message.SerializeToString())


def _at(path: str) -> Callable[[Messages], CheckRequest]:
    return _call(_order(small=1), path=path)


def _null(messages: Messages) -> ParsedBody:
    return None, False


def _first(messages: Messages) -> ParsedBody:
    return {"small": 1}, False


def _with_unknown(messages: Messages) -> bytes:
    return frame(messages.new("shop.v1.Order", small=1).SerializeToString() + b"\xa0\x06\x01")


def _nested(depth: int) -> Callable[[Messages], bytes]:
    def build(messages: Messages) -> bytes:
        root = messages.new("shop.v1.Order")
        current = root
        for _ in range(depth):
            current = current.parent
        current.small = 1
        return frame(root.SerializeToString())

    return build


def _nested_json(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"small": 1}
    for _ in range(depth):
        value = {"parent": value}
    return value


def _any(messages: Messages) -> bytes:
    message = messages.new("shop.v1.Order", small=1)
    message.extra.Pack(messages.new("shop.v1.Line", sku="a"))
    return frame(message.SerializeToString())


CASES = [
    Case("every kind of field", _call(_rich)),
    Case("a message of defaults", _call(lambda m: frame(b""))),
    Case("grpc+proto", _call(_order(small=2), content_type="application/grpc+proto")),
    Case("special doubles", _call(_order(price=math.inf, ratio=-math.inf))),
    Case("NaN", _call(_order(price=math.nan))),
    Case("float32 edges", _call(_order(ratio=1 / 3, price=1e-300))),
    Case("float32 large", _call(_order(ratio=3.4028234663852886e38, price=1e21))),
    Case("an enum value the set does not name", _call(_order(kind=7))),
    Case("negative zero", _call(_order(price=-0.0, ratio=-0.0))),  # -0.0 and 0: equal numbers to OPA
    Case("exponents", _call(_order(price=-1.5e-7, ratio=1e-45))),
    Case("float32 subnormals and powers of two, everywhere", _call(_subnormals)),
    Case("100 messages nested in the request", _call(_nested(100))),
    Case("cut by Envoy", _call(lambda m: _rich(m)[:40], headers={"x-envoy-auth-partial-body": "true"})),
    Case("an Any", _call(_any), plugin=lambda m: "400"),
    Case("a string that is not UTF-8", _call(lambda m: frame(b"\x0a\x02\xc3\x28")), plugin=lambda m: "400"),
    Case("bytes that do not decode", _call(lambda m: frame(b"\x20")), plugin=lambda m: "400"),
    Case("shorter than a prefix", _call(lambda m: b"\x00\x00"), plugin=lambda m: "400"),
    Case("a path of three segments", _at("/v1/shop.v1.Orders/Place"), plugin=lambda m: "400"),
    # The refusals the plugin does not make.
    Case("compressed flag", _call(lambda m: frame(b"\x20\x01", flag=1)), plugin=_null),
    Case("two messages", _call(lambda m: frame(b"\x20\x01") + frame(b"\x20\x02")), plugin=_first),
    Case("a length beyond the body", _call(lambda m: frame(b"\x20\x01")[:-1]), plugin=lambda m: (None, True)),
    Case("grpc-encoding gzip", _call(_order(small=1), headers={"grpc-encoding": "gzip"}), plugin=_first),
    Case("a query after the method", _at(PLACE + "?x=1"), plugin=_first),
    Case("unknown method", _at("/shop.v1.Orders/Cancel"), plugin=_null),
    Case("unknown service", _at("/shop.v1.Carts/Place"), plugin=_null),
    Case("client streaming", _at("/shop.v1.Orders/Upload"), plugin=_null),
    Case("server streaming", _at("/shop.v1.Orders/Watch"), plugin=_first),
    Case("an unknown field", _call(_with_unknown), plugin=_first),
    Case("an extension", _call(lambda m: frame(b"\x0a\x02hi\xa2\x06\x01x"), path="/legacy.Notes/Post"),
         plugin=lambda m: ({"text": "hi"}, False)),
    Case("101 messages nested", _call(_nested(101)), plugin=lambda m: (_nested_json(101), False)),
    Case("another codec", _call(_order(small=1), content_type="application/grpc+json"), plugin=_first),
]  # fmt: skip


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_descriptor_set(tmp_path_factory.mktemp("peer-protos"))


@pytest.fixture(scope="module")
def grpc_plugin(descriptor_set: Path, peer_files: list[Path]) -> Iterator[PluginProcess]:
    binary = plugin_binary()
    assert binary is not None
    process = start_plugin(binary, DECISION_PATH, peer_files, [f"proto-descriptor={descriptor_set}"])
    yield process
    process.stop()


def _seen(outcome: Outcome) -> ParsedBody | str:
    if outcome.kind == "deny" and outcome.http_status == 400:
        return "400"
    assert outcome.kind == "allow", outcome
    return _as_decimals(outcome.echoed_input["parsed_body"]), outcome.echoed_input["truncated_body"]


def _normalised(seen: ParsedBody | str) -> ParsedBody | str:
    return seen if isinstance(seen, str) else (_as_decimals(seen[0]), seen[1])


def _as_decimals(value: Any) -> Any:
    """Numbers as the decimals they denote, as OPA compares them: the plugin's input
    writes 1.4757395e+20 where the sidecar's writes 1.4757395e20, and OPA gives one
    back as an integer and the other as a float, which differ in Python."""
    if isinstance(value, dict):
        return {key: _as_decimals(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_decimals(item) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(repr(value))
    return value


async def test_grpc_bodies_parse_alike_or_differ_as_the_readme_says(
    descriptor_set: Path, peer_opa: OpaProcess, grpc_plugin: PluginProcess
) -> None:
    messages = Messages(descriptor_set)
    requests = [case.request(messages) for case in CASES]
    methods = GrpcMethods.from_file(str(descriptor_set))
    async with running_sidecar(
        peer_opa.url, decision_path=DECISION_PATH, opa_timeout=2.0, proto_descriptor=methods
    ) as sidecar:
        ours = [_seen(outcome_of(await sidecar.check(r, timeout=5.0))) for r in requests]
    theirs = [_seen(outcome) for outcome in await ask_over_grpc(grpc_plugin.grpc_target, requests)]
    wrong = []
    for case, mine, plugin in zip(CASES, ours, theirs, strict=True):
        expected_plugin = mine if case.plugin is None else _normalised(case.plugin(messages))
        expected_mine = plugin if case.plugin is None else "400"
        if plugin != expected_plugin or mine != expected_mine:
            wrong.append(f"{case.name}: sidecar {mine!r}, plugin {plugin!r}")
    assert not wrong, "\n".join(wrong)
    assert sum(1 for case in CASES if case.plugin is None) >= 10
