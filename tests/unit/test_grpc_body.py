"""gRPC request bodies with --proto-descriptor: the unary request message as protojson
renders it, and a refusal wherever the policy could see less than the application."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import orjson
import pytest
from google.protobuf import descriptor_pb2

from sidecar.cli import build_parser, main
from sidecar.config import ConfigError, Settings, settings_from
from sidecar.envoy.grpc_body import GrpcMethods
from sidecar.envoy.input import BadRequest, build_input, opa_request_body
from tests.fixtures.grpc_messages import Messages, frame, grpc_check, write_descriptor_set

LIMIT = 8192


def settings(*argv: str, env: dict[str, str] | None = None) -> Settings:
    return settings_from(build_parser().parse_args(["serve", *argv]), env or {})


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_descriptor_set(tmp_path_factory.mktemp("protos"))


@pytest.fixture(scope="module")
def methods(descriptor_set: Path) -> GrpcMethods:
    return GrpcMethods.from_file(str(descriptor_set))


@pytest.fixture(scope="module")
def messages(descriptor_set: Path) -> Messages:
    return Messages(descriptor_set)


def parsed(methods: GrpcMethods | None, body: bytes, **kwargs: Any) -> tuple[Any, bool]:
    doc = build_input(grpc_check(body, **kwargs), envoy_body_limit=LIMIT, grpc_methods=methods)
    return doc["parsed_body"], doc["truncated_body"]


def refusal(methods: GrpcMethods, body: bytes, **kwargs: Any) -> str:
    with pytest.raises(BadRequest) as info:
        parsed(methods, body, **kwargs)
    assert info.value.http_status == 400
    return str(info.value)


def order(messages: Messages, **fields: Any) -> bytes:
    data: bytes = messages.new("shop.v1.Order", **fields).SerializeToString()
    return data


def test_the_request_message_is_rendered_as_protojson_renders_it(
    methods: GrpcMethods, messages: Messages
) -> None:
    message = messages.new(
        "shop.v1.Order",
        order_id="o-1",
        total_cents=-(2**40),
        serial=2**64 - 1,
        small=7,
        kind=2,
        token=b"\x00\xff\xfe",
        price=12.5,
        ratio=0.1,
        priority=0,
        customer="ann",
        labels={"tier": "gold"},
    )
    message.placed_at.seconds = 1767225600
    message.placed_at.nanos = 5_000_000
    message.lines.add(sku="a", quantity=3)
    message.lines_by_sku["b"].quantity = 1
    body, truncated = parsed(methods, frame(message.SerializeToString()))
    assert truncated is False
    assert body == {
        "orderId": "o-1",  # JSON names
        "totalCents": str(-(2**40)),  # 64-bit integers as strings
        "serial": "18446744073709551615",
        "small": 7,
        "kind": "KIND_TOOL",  # enums by name
        "token": base64.b64encode(b"\x00\xff\xfe").decode(),
        "placedAt": "2026-01-01T00:00:00.005Z",
        "linesBySku": {"b": {"quantity": "1"}},
        "lines": [{"sku": "a", "quantity": "3"}],
        "price": 12.5,
        "ratio": 0.1,  # float32 at its shortest
        "priority": 0,  # explicit presence: set, so shown
        "buyer": "ann",  # json_name
        "labels": {"tier": "gold"},
    }  # gift (false) and the other defaults are left out


def test_float32_values_have_the_fewest_digits_that_read_back(
    methods: GrpcMethods, messages: Messages
) -> None:
    tiny = 1e-45  # the smallest float32 subnormal: Python's renderer wrote 1.4013e-45
    message = messages.new("shop.v1.Order", ratio=tiny, samples=[tiny, 0.1, 3.4028234663852886e38])
    message.weights["w"] = tiny
    message.discount.value = tiny
    message.flagged[True].parent.ratio = tiny
    message.parent.lines.add(sku="p")
    message.parent.samples.append(2.8e-45)
    body, _ = parsed(methods, frame(message.SerializeToString()))
    assert body == {
        "ratio": 1e-45,
        "samples": [1e-45, 0.1, 3.4028235e38],
        "weights": {"w": 1e-45},
        "discount": 1e-45,
        "flagged": {"true": {"parent": {"ratio": 1e-45}}},
        "parent": {"lines": [{"sku": "p"}], "samples": [3e-45]},
    }


def test_a_message_of_defaults_is_an_empty_object(methods: GrpcMethods) -> None:
    assert parsed(methods, frame(b"")) == ({}, False)


def test_the_body_stays_in_raw_body(methods: GrpcMethods, messages: Messages) -> None:
    data = frame(order(messages, order_id="o-2"))
    doc = build_input(grpc_check(data), grpc_methods=methods)
    assert base64.b64decode(doc["attributes"]["request"]["http"]["rawBody"]) == data
    assert doc["parsed_body"] == {"orderId": "o-2"}
    assert orjson.loads(opa_request_body(doc))["input"]["parsed_body"] == {"orderId": "o-2"}


def test_grpc_plus_proto_and_case_are_the_same_type(methods: GrpcMethods, messages: Messages) -> None:
    data = frame(order(messages, small=1))
    for content_type in ("application/grpc+proto", "Application/GRPC"):
        assert parsed(methods, data, content_type=content_type) == ({"small": 1}, False)


def test_without_a_descriptor_set_a_grpc_body_is_not_parsed(messages: Messages) -> None:
    data = frame(order(messages, small=1), flag=1)
    assert parsed(None, data) == (None, False)
    assert parsed(None, data, path="/not/a/method?at=all") == (None, False)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/shop.v1.Orders/Place?x=1", "is not /package.Service/Method"),
        ("/shop.v1.Orders/Place/", "is not /package.Service/Method"),
        ("/api/shop.v1.Orders/Place", "is not /package.Service/Method"),
        ("/shop.v1.Orders/%50lace", "is not /package.Service/Method"),
        ("/shop.v1.Orders", "is not /package.Service/Method"),
        ("/shop.v1.Carts/Place", "names no method"),
        ("/shop.v1.Orders/Cancel", "names no method"),
        ("/shop.v1.Order/Place", "names no method"),  # a message, not a service
        ("/shop.v1.Orders/Watch", "is streaming"),  # server streaming
        ("/shop.v1.Orders/Upload", "is streaming"),  # client streaming
        ("/shop.v1.Orders/Chat", "is streaming"),
    ],
)
def test_a_call_of_no_unary_method_in_the_set_is_refused(
    methods: GrpcMethods, messages: Messages, path: str, reason: str
) -> None:
    assert reason in refusal(methods, frame(order(messages, small=1)), path=path)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (frame(b"\x20\x01", flag=1), "compressed"),
        (frame(b"\x20\x01", flag=2), "flag is invalid"),
        (frame(b"\x20\x01") + frame(b"\x20\x02"), "more than one message"),
        (frame(b"\x20\x01") + b"\x00", "more than one message"),
        (frame(b"\x20\x01")[:-1], "more than the body holds"),
        (b"\x00\x00\x00", "shorter than a message prefix"),
        (frame(b"\x20"), "does not decode"),  # a varint cut short
        (frame(b"\x0a\x02\xc3\x28"), "does not decode"),  # a string that is not UTF-8
        (frame(b"\x07\x01"), "does not decode"),  # wire type 7
    ],
)
def test_a_body_that_is_not_one_whole_message_is_refused(
    methods: GrpcMethods, body: bytes, reason: str
) -> None:
    assert reason in refusal(methods, body)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "Identity", ""])
def test_a_grpc_encoding_other_than_identity_is_refused(
    methods: GrpcMethods, messages: Messages, encoding: str
) -> None:
    data = frame(order(messages, small=1))
    assert "grpc-encoding" in refusal(methods, data, headers={"grpc-encoding": encoding})
    assert parsed(methods, data, headers={"grpc-encoding": "identity"}) == ({"small": 1}, False)


def test_another_codec_is_refused(methods: GrpcMethods, messages: Messages) -> None:
    data = frame(b'{"small": 1}')
    assert "codec" in refusal(methods, data, content_type="application/grpc+json")


def test_fields_the_set_does_not_describe_are_refused(methods: GrpcMethods, messages: Messages) -> None:
    unknown = b"\xa0\x06\x01"  # field 100, varint 1
    line = messages.new("shop.v1.Line", sku="a").SerializeToString() + unknown
    nested = b"\x4a" + bytes([len(line)]) + line  # lines (9)
    entry = b"\x0a\x01k\x12" + bytes([len(line)]) + line  # map key "k", value Line
    in_map = b"\x42" + bytes([len(entry)]) + entry  # lines_by_sku (8)
    parent = order(messages, small=1) + unknown
    deep = b"\x82\x01" + bytes([len(parent)]) + parent  # parent (16)
    for payload in (order(messages, small=1) + unknown, nested, in_map, deep):
        assert "does not describe" in refusal(methods, frame(payload))


def test_an_any_is_refused(methods: GrpcMethods, messages: Messages) -> None:
    message = messages.new("shop.v1.Order", small=1)
    message.extra.Pack(messages.new("shop.v1.Line", sku="a"))
    assert "Any" in refusal(methods, frame(message.SerializeToString()))


def test_an_extension_is_refused(methods: GrpcMethods) -> None:
    note = b"\x0a\x02hi"
    assert parsed(methods, frame(note), path="/legacy.Notes/Post") == ({"text": "hi"}, False)
    tagged = note + b"\xa2\x06\x01x"  # tag (100) = "x"
    reason = refusal(methods, frame(tagged), path="/legacy.Notes/Post")
    assert "extension" in reason or "does not describe" in reason


def test_nesting_is_bounded_and_what_is_taken_reaches_opa(methods: GrpcMethods, messages: Messages) -> None:
    def nested(depth: int) -> bytes:
        root = messages.new("shop.v1.Order")
        current = root
        for _ in range(depth):
            current = current.parent
            current.small = 1
        data: bytes = root.SerializeToString()
        return data

    doc = build_input(grpc_check(frame(nested(100))), grpc_methods=methods)
    assert b'"small":1' in opa_request_body(doc)
    assert "does not decode" in refusal(methods, frame(nested(101)))


def test_a_cut_body_is_truncated_but_still_checked_as_far_as_it_goes(
    methods: GrpcMethods, messages: Messages
) -> None:
    whole = frame(order(messages, order_id="x" * 100))
    cut = whole[:50]
    partial = {"x-envoy-auth-partial-body": "true"}
    assert parsed(methods, cut, headers=partial) == (None, True)
    assert parsed(methods, cut[:3], headers=partial) == (None, True)
    assert "names no method" in refusal(methods, cut, headers=partial, path="/shop.v1.Orders/Cancel")
    assert "is streaming" in refusal(methods, cut, headers=partial, path="/shop.v1.Orders/Upload")
    assert "compressed" in refusal(methods, b"\x01" + cut[1:], headers=partial)
    two = frame(b"\x20\x01") + cut
    assert "more than one message" in refusal(methods, two, headers=partial)


def test_a_body_filling_envoys_limit_counts_as_cut(methods: GrpcMethods, messages: Messages) -> None:
    # Envoy says "false" for an HTTP/2 body cut exactly at its limit.
    whole = frame(order(messages, order_id="x" * LIMIT))
    assert parsed(methods, whole[:LIMIT]) == (None, True)


def _descriptor_set_file(tmp_path: Path, files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    path = tmp_path / "set.pb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString())
    return str(path)


def test_bad_descriptor_sets_stop_the_start_naming_the_flag(tmp_path: Path, descriptor_set: Path) -> None:
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff\xff")
    no_imports = write_descriptor_set(tmp_path, include_imports=False)
    shop = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    no_service = _descriptor_set_file(tmp_path, [f for f in shop.file if f.name.startswith("google/")])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = {
        str(tmp_path / "missing.pb"): "cannot read it",
        str(tmp_path): "is not a regular file",
        str(fifo): "is not a regular file",
        str(garbage): "is not a serialized FileDescriptorSet",
        str(no_imports): "lacks google/protobuf/",
        no_service: "describes no service method",
    }
    for path, reason in cases.items():
        with pytest.raises(ConfigError, match=f"--proto-descriptor.*{reason}"):
            settings("--opa-url", "http://o:1", "--proto-descriptor", path)


def test_a_descriptor_set_that_does_not_build_is_refused(tmp_path: Path, descriptor_set: Path) -> None:
    shop = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    broken = [descriptor_pb2.FileDescriptorProto() for _ in shop.file]
    for copy, original in zip(broken, shop.file, strict=True):
        copy.CopyFrom(original)
    broken[-1].message_type[0].field[0].type_name = ".shop.v1.Missing"
    broken[-1].message_type[0].field[0].type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    with pytest.raises(ConfigError, match="does not build into descriptors"):
        settings("--opa-url", "http://o:1", "--proto-descriptor", _descriptor_set_file(tmp_path, broken))
    twice = _descriptor_set_file(tmp_path, [*shop.file, shop.file[0]])
    with pytest.raises(ConfigError, match="holds a file twice"):
        settings("--opa-url", "http://o:1", "--proto-descriptor", twice)


def test_the_flag_and_its_variable_load_the_set(descriptor_set: Path) -> None:
    loaded = settings("--opa-url", "http://o:1", "--proto-descriptor", str(descriptor_set))
    assert isinstance(loaded.proto_descriptor, GrpcMethods)
    from_env = settings("--opa-url", "http://o:1", env={"OPA_SIDECAR_PROTO_DESCRIPTOR": str(descriptor_set)})
    assert isinstance(from_env.proto_descriptor, GrpcMethods)
    assert settings("--opa-url", "http://o:1").proto_descriptor is None
    with pytest.raises(ConfigError, match="--skip-request-body-parse"):
        settings(
            "--opa-url", "http://o:1", "--proto-descriptor", str(descriptor_set), "--skip-request-body-parse"
        )


def test_main_exits_2_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"not a descriptor set")
    assert main(["serve", "--opa-url", "http://o:1", "--proto-descriptor", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("opa-sidecar: invalid --proto-descriptor")


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(
    payload=st.binary(max_size=64),
    flag=st.sampled_from([0, 0, 0, 1, 2]),
    extra=st.sampled_from([b"", b"\x00", b"\x00\x00\x00\x00\x01\x20"]),
    path=st.sampled_from(["/shop.v1.Orders/Place", "/legacy.Notes/Post", "/shop.v1.Orders/Watch", "/x/y"]),
    partial=st.booleans(),
)
def test_any_bytes_give_a_body_or_a_refusal(
    methods: GrpcMethods, payload: bytes, flag: int, extra: bytes, path: str, partial: bool
) -> None:
    headers = {"x-envoy-auth-partial-body": "true"} if partial else {}
    request = grpc_check(frame(payload, flag=flag) + extra, path=path, headers=headers)
    try:
        doc = build_input(request, grpc_methods=methods)
    except BadRequest:
        return
    assert doc["truncated_body"] is partial
    assert doc["parsed_body"] is None if partial else isinstance(doc["parsed_body"], dict)
    orjson.loads(opa_request_body(doc))
