"""The input builder: CheckRequest -> the OPA-Envoy input document (compat reference, section 2)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import orjson
import pytest
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.envoy.config.core.v3 import base_pb2
from sidecar._proto.envoy.service.auth.v3 import external_auth_pb2
from sidecar.envoy.input import MAX_BODY_JSON_DEPTH, BadRequest, build_input, opa_request_body

CheckRequest = external_auth_pb2.CheckRequest


def make_request(
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    body: str = "",
    raw_body: bytes = b"",
    content_type: str | None = None,
    principal: str = "",
) -> CheckRequest:
    request = CheckRequest()
    http = request.attributes.request.http
    http.path = path
    http.method = "POST"
    http.headers.update(headers or {})
    if content_type is not None:
        http.headers["content-type"] = content_type
    http.body = body
    http.raw_body = raw_body
    if principal:
        request.attributes.source.principal = principal
    return request


def parsed_path(path: str) -> list[str]:
    result: list[str] = build_input(make_request(path))["parsed_path"]
    return result


def parsed_query(path: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = build_input(make_request(path))["parsed_query"]
    return result


def body_result(content_type: str | None, body: str = "", **kwargs: Any) -> tuple[Any, bool]:
    doc = build_input(make_request(content_type=content_type, body=body, **kwargs))
    return doc["parsed_body"], doc["truncated_body"]


# --- the reference's example (section 2.6) -----------------------------------


def test_reference_example_document() -> None:
    request = CheckRequest()
    attrs = request.attributes
    attrs.source.address.socket_address.address = "10.0.0.7"
    attrs.source.address.socket_address.port_value = 41522
    attrs.source.principal = "spiffe://example.org/ns/shop/sa/web"
    attrs.destination.address.socket_address.address = "10.0.0.2"
    attrs.destination.address.socket_address.port_value = 8000
    attrs.request.time.seconds = 1767225600
    attrs.request.time.nanos = 125000000
    http = attrs.request.http
    http.id = "11421360438498690262"
    http.method = "POST"
    headers = {
        ":authority": "shop.example.org",
        ":method": "POST",
        ":path": "/v1/orders?tag=a&tag=b",
        ":scheme": "https",
        "content-type": "application/json",
        "content-length": "9",
        "x-envoy-auth-partial-body": "false",
        "x-request-id": "0f6c2a52-8f0e-4d7e-9a51-3d2b9c1e7a40",
    }
    http.headers.update(headers)
    http.path = "/v1/orders?tag=a&tag=b"
    http.host = "shop.example.org"
    http.scheme = "https"
    http.size = 9
    http.protocol = "HTTP/2"
    http.body = '{"qty":3}'

    assert build_input(request) == {
        "attributes": {
            "source": {
                "address": {"socketAddress": {"address": "10.0.0.7", "portValue": 41522}},
                "principal": "spiffe://example.org/ns/shop/sa/web",
            },
            "destination": {"address": {"socketAddress": {"address": "10.0.0.2", "portValue": 8000}}},
            "request": {
                "time": {"seconds": 1767225600, "nanos": 125000000},
                "http": {
                    "id": "11421360438498690262",
                    "method": "POST",
                    "headers": headers,
                    "path": "/v1/orders?tag=a&tag=b",
                    "host": "shop.example.org",
                    "scheme": "https",
                    "size": 9,
                    "protocol": "HTTP/2",
                    "body": '{"qty":3}',
                },
            },
        },
        "parsed_path": ["v1", "orders"],
        "parsed_query": {"tag": ["a", "b"]},
        "parsed_body": {"qty": 3},
        "truncated_body": False,
        "source_principal": "spiffe://example.org/ns/shop/sa/web",
        "version": {"ext_authz": "v3", "encoding": "protojson"},
    }


def test_empty_check_request() -> None:
    # protomap renders only present fields: no attributes key at all.
    assert build_input(CheckRequest()) == {
        "parsed_path": [""],
        "parsed_query": {},
        "parsed_body": None,
        "truncated_body": False,
        "version": {"ext_authz": "v3", "encoding": "protojson"},
    }


def test_version_is_a_fresh_object() -> None:
    first = build_input(CheckRequest())
    first["version"]["ext_authz"] = "changed"
    assert build_input(CheckRequest())["version"] == {"ext_authz": "v3", "encoding": "protojson"}


# --- attributes rendering -----------------------------------------------------


def test_present_but_empty_messages_render_as_empty_objects() -> None:
    request = CheckRequest()
    attrs = request.attributes
    attrs.metadata_context.SetInParent()  # Envoy always sends it, often empty
    attrs.route_metadata_context.SetInParent()
    attrs.tls_session.SetInParent()
    attrs.request.time.SetInParent()
    attrs.request.http.header_map.SetInParent()
    attrs.source.address.SetInParent()
    assert build_input(request)["attributes"] == {
        "metadataContext": {},
        "routeMetadataContext": {},
        "tlsSession": {},
        "request": {"time": {}, "http": {"headerMap": {}}},
        "source": {"address": {}},
    }


def test_zero_values_are_omitted() -> None:
    request = CheckRequest()
    http = request.attributes.request.http
    http.size = 0
    http.method = ""
    http.raw_body = b""
    assert build_input(request)["attributes"] == {"request": {"http": {}}}


def test_timestamp_renders_seconds_and_nanos_numbers() -> None:
    request = CheckRequest()
    request.attributes.request.time.seconds = 1767225600
    assert build_input(request)["attributes"]["request"]["time"] == {"seconds": 1767225600}
    request.attributes.request.time.seconds = 0
    request.attributes.request.time.nanos = 5
    assert build_input(request)["attributes"]["request"]["time"] == {"nanos": 5}


@pytest.mark.parametrize("size", [-1, 10, 2**40])
def test_size_is_a_number_even_when_unknown(size: int) -> None:
    request = CheckRequest()
    request.attributes.request.http.size = size
    assert build_input(request)["attributes"]["request"]["http"] == {"size": size}


def test_http_fields_bytes_and_header_map() -> None:
    request = CheckRequest()
    http = request.attributes.request.http
    http.query = "q"
    http.fragment = "f"
    http.raw_body = b"\x00\xffbinary"
    http.header_map.headers.add(key=":path", raw_value=b"/x")
    http.header_map.headers.add(key="x-empty")
    http.header_map.headers.add(key="x-v", value="v")
    assert build_input(request)["attributes"]["request"]["http"] == {
        "query": "q",
        "fragment": "f",
        "rawBody": base64.b64encode(b"\x00\xffbinary").decode(),
        "headerMap": {
            "headers": [
                {"key": ":path", "rawValue": base64.b64encode(b"/x").decode()},
                {"key": "x-empty"},
                {"key": "x-v", "value": "v"},
            ]
        },
    }


def test_peer_fields_enums_and_oneofs() -> None:
    request = CheckRequest()
    source = request.attributes.source
    sa = source.address.socket_address
    sa.protocol = base_pb2.SocketAddress.UDP
    sa.address = "::1"
    sa.port_value = 0  # a set oneof member shows even when zero
    sa.resolver_name = "r"
    sa.ipv4_compat = True
    sa.network_namespace_filepath = "/run/netns/x"
    source.service = "svc"
    source.labels["app"] = "web"
    source.certificate = "-----BEGIN%20CERTIFICATE-----%0A"
    dest = request.attributes.destination
    dest.address.socket_address.named_port = "http"
    attrs = build_input(request)["attributes"]
    assert attrs["source"] == {
        "address": {
            "socketAddress": {
                "protocol": 1,
                "address": "::1",
                "portValue": 0,
                "resolverName": "r",
                "ipv4Compat": True,
                "networkNamespaceFilepath": "/run/netns/x",
            }
        },
        "service": "svc",
        "labels": {"app": "web"},
        "certificate": "-----BEGIN%20CERTIFICATE-----%0A",
    }
    assert attrs["destination"] == {"address": {"socketAddress": {"namedPort": "http"}}}


def test_pipe_and_internal_addresses() -> None:
    request = CheckRequest()
    request.attributes.source.address.pipe.path = "/run/sock"
    request.attributes.source.address.pipe.mode = 0o600
    request.attributes.destination.address.envoy_internal_address.server_listener_name = ""
    request.attributes.destination.address.envoy_internal_address.endpoint_id = "e1"
    attrs = build_input(request)["attributes"]
    assert attrs["source"] == {"address": {"pipe": {"path": "/run/sock", "mode": 0o600}}}
    assert attrs["destination"] == {
        "address": {"envoyInternalAddress": {"serverListenerName": "", "endpointId": "e1"}}
    }


def test_context_extensions_and_tls_session() -> None:
    request = CheckRequest()
    request.attributes.context_extensions["virtual_host"] = "shop"
    request.attributes.tls_session.sni = "shop.example.org"
    attrs = build_input(request)["attributes"]
    assert attrs["contextExtensions"] == {"virtual_host": "shop"}
    assert attrs["tlsSession"] == {"sni": "shop.example.org"}


def test_metadata_struct_renders_as_plain_json() -> None:
    request = CheckRequest()
    md = request.attributes.metadata_context
    md.filter_metadata["envoy.filters.http.jwt_authn"].update(
        {
            "sub": "u1",
            "exp": 1767229200,
            "ratio": 0.5,
            "admin": False,
            "gone": None,
            "scopes": ["a", 2, None, {"x": True}],
            "nested": {"deep": {"n": -1}},
        }
    )
    md.filter_metadata["empty"].Clear()
    assert build_input(request)["attributes"]["metadataContext"] == {
        "filterMetadata": {
            "envoy.filters.http.jwt_authn": {
                "sub": "u1",
                "exp": 1767229200.0,
                "ratio": 0.5,
                "admin": False,
                "gone": None,
                "scopes": ["a", 2.0, None, {"x": True}],
                "nested": {"deep": {"n": -1.0}},
            },
            "empty": {},
        }
    }
    exp = build_input(request)["attributes"]["metadataContext"]["filterMetadata"]
    assert isinstance(exp["envoy.filters.http.jwt_authn"]["exp"], float)  # as protobuf holds it


def test_metadata_struct_non_finite_numbers_and_unset_values() -> None:
    # Go's structpb.AsInterface writes non-finite numbers as protojson strings
    # and an unset kind as null.
    request = CheckRequest()
    fields = request.attributes.route_metadata_context.filter_metadata["ns"].fields
    fields["nan"].number_value = math.nan
    fields["inf"].number_value = math.inf
    fields["ninf"].number_value = -math.inf
    fields["unset"].Clear()
    assert build_input(request)["attributes"]["routeMetadataContext"] == {
        "filterMetadata": {"ns": {"nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "unset": None}}
    }


def test_typed_filter_metadata_any_is_not_unpacked() -> None:
    request = CheckRequest()
    packed = any_pb2.Any(type_url="type.googleapis.com/x.Y", value=b"\x08\x01")
    request.attributes.metadata_context.typed_filter_metadata["ns"].CopyFrom(packed)
    request.attributes.metadata_context.typed_filter_metadata["empty"].Clear()
    assert build_input(request)["attributes"]["metadataContext"] == {
        "typedFilterMetadata": {
            "ns": {"typeUrl": "type.googleapis.com/x.Y", "value": base64.b64encode(b"\x08\x01").decode()},
            "empty": {},
        }
    }


def test_unknown_fields_are_ignored() -> None:
    unknown_varint = b"\x98\x06\x05"  # field 99, varint 5
    unknown_bytes = b"\x9a\x06\x02zz"  # field 99, "zz"
    http = b"\x12\x03GET" + unknown_bytes  # method = "GET"
    request = b"\x12" + bytes([len(http)]) + http  # Request.http
    attrs = b"\x22" + bytes([len(request)]) + request + unknown_varint  # AttributeContext.request
    check = b"\x0a" + bytes([len(attrs)]) + attrs + unknown_bytes
    assert build_input(CheckRequest.FromString(check))["attributes"] == {
        "request": {"http": {"method": "GET"}}
    }


def _reference_walk(msg: Message) -> dict[str, Any]:
    """Go's protomap, written generically over the descriptors: the oracle for
    the hand-written walk in ``sidecar.envoy.attributes``."""
    if msg.DESCRIPTOR.full_name == "google.protobuf.Struct":
        return {k: _reference_value(v) for k, v in msg.fields.items()}  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                out[fd.json_name] = {k: _reference_walk(v) for k, v in value.items()}
            else:
                out[fd.json_name] = dict(value)
        elif fd.is_repeated:
            out[fd.json_name] = [_reference_walk(v) for v in value]
        elif fd.message_type is not None:
            out[fd.json_name] = _reference_walk(value)
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            out[fd.json_name] = base64.b64encode(value).decode()
        else:
            out[fd.json_name] = value
    return out


def _reference_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _reference_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_reference_value(v) for v in value.list_value.values]
    if kind in (None, "null_value"):
        return None
    return getattr(value, kind)


def _fill(msg: Message, oneof_choice: int) -> None:
    """Set every field of ``msg`` (recursively) to a non-zero value, taking
    member ``oneof_choice`` of each oneof."""
    if msg.DESCRIPTOR.full_name == "google.protobuf.Struct":
        msg.update({"n": 1.5, "s": "x", "l": [True, None], "o": {"k": "v"}})  # type: ignore[attr-defined]
        return
    for fd in msg.DESCRIPTOR.fields:
        oneof = fd.containing_oneof
        if oneof is not None and oneof.fields[oneof_choice % len(oneof.fields)] is not fd:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            container = getattr(msg, fd.name)
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                _fill(container[f"key-{fd.name}"], oneof_choice)
            else:
                container[f"key-{fd.name}"] = f"value-{fd.name}"
        elif fd.is_repeated:
            for _ in range(2):
                _fill(getattr(msg, fd.name).add(), oneof_choice)
        elif fd.message_type is not None:
            _fill(getattr(msg, fd.name), oneof_choice)
        elif fd.type == FieldDescriptor.TYPE_STRING:
            setattr(msg, fd.name, f"{fd.name}-value")
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            setattr(msg, fd.name, b"\x00\xfe" + fd.name.encode())
        elif fd.type == FieldDescriptor.TYPE_BOOL:
            setattr(msg, fd.name, True)
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            setattr(msg, fd.name, 1)
        elif fd.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32):
            setattr(msg, fd.name, -7)
        else:
            setattr(msg, fd.name, 7)


@pytest.mark.parametrize("oneof_choice", [0, 1, 2])
def test_hand_written_walk_covers_every_field(oneof_choice: int) -> None:
    # Guards against drift: a field added to the protos but not to the
    # hand-written walk would be missing from the document.
    request = CheckRequest()
    _fill(request, oneof_choice)
    assert build_input(request, parse_body=False)["attributes"] == _reference_walk(request)["attributes"]


def test_source_principal() -> None:
    assert build_input(make_request(principal="spiffe://a/b"))["source_principal"] == "spiffe://a/b"
    assert "source_principal" not in build_input(make_request())


# --- parsed_path ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/my/test/path", ["my", "test", "path"]),
        ("/my/test/path?a=1", ["my", "test", "path"]),
        ("%2Fmy%2Ftest%2Fpath?a=1", ["my", "test", "path"]),  # %2F is a separator
        ("/a%2fb", ["a", "b"]),
        ("//admin/dashboard", ["admin", "dashboard"]),  # GHSA-9f29-v6mm-pw6w
        ("//x/people?a=1", ["x", "people"]),
        ("///admin", ["admin"]),
        ("/%2F%2Fadmin/x", ["admin", "x"]),  # decoded before the slashes are trimmed
        ("/", [""]),
        ("", [""]),
        ("?a=1", [""]),
        ("/a/", ["a", ""]),
        ("/a//b", ["a", "", "b"]),
        ("/./a/../b", [".", "a", "..", "b"]),
        ("/a+b", ["a+b"]),  # PathUnescape keeps '+'
        ("/a%20b", ["a b"]),
        ("/a%2Bb", ["a+b"]),
        ("/caf%C3%A9", ["café"]),
        ("/café", ["café"]),
        ("/x#frag", ["x#frag"]),  # no fragment handling
        ("/x%3Fy?z", ["x?y"]),  # split before decoding: an escaped '?' stays in the path
        ("relative/path", ["relative", "path"]),
    ],
)
def test_parsed_path(path: str, expected: list[str]) -> None:
    assert parsed_path(path) == expected


@pytest.mark.parametrize("path", ["/%", "/%4", "/a%zz", "/%g0", "/x%2", "/%C3", "/%ff", "/%C3%28"])
def test_parsed_path_bad_escapes_and_non_utf8_are_rejected(path: str) -> None:
    with pytest.raises(BadRequest, match="path") as info:
        parsed_path(path)
    assert "%" not in str(info.value)


# --- parsed_query ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", {}),
        ("/x?", {}),
        ("/x?a=1", {"a": ["1"]}),
        ("/x?a=1&a=2&b=3&a=4", {"a": ["1", "2", "4"], "b": ["3"]}),
        ("/x?a", {"a": [""]}),
        ("/x?a=", {"a": [""]}),
        ("/x?a&a=1&a", {"a": ["", "1", ""]}),
        ("/x?=v", {"": ["v"]}),
        ("/x?=", {"": [""]}),
        ("/x?&&a=1&&", {"a": ["1"]}),
        ("/x?a+b=c+d", {"a b": ["c d"]}),
        ("/x?a=%2B%20", {"a": ["+ "]}),
        ("/x?a=new%0aline", {"a": ["new\nline"]}),
        ("/x?k%3Dx=v%26w", {"k=x": ["v&w"]}),
        ("/x?a=b=c", {"a": ["b=c"]}),
        ("/x?a=1?b=2", {"a": ["1?b=2"]}),
        ("/x?q=caf%C3%A9", {"q": ["café"]}),
        ("/x?q=é", {"q": ["é"]}),
    ],
)
def test_parsed_query(path: str, expected: dict[str, list[str]]) -> None:
    assert parsed_query(path) == expected


@pytest.mark.parametrize(
    "path",
    ["/x?a=1;b=2", "/x?;", "/x?a=1&b;", "/x?a=%zz", "/x?a=%", "/x?a=%4", "/x?%zz=1", "/x?a=%ff", "/x?a=%C3"],
)
def test_parsed_query_errors_are_rejected(path: str) -> None:
    with pytest.raises(BadRequest, match="query"):
        parsed_query(path)


def test_parsed_query_parameter_limit() -> None:
    # Go's url.ParseQuery refuses more than 10000 '&'-separated parameters.
    assert parsed_query("/x?" + "&" * 9999 + "a=1") == {"a": ["1"]}
    with pytest.raises(BadRequest, match="too many"):
        parsed_query("/x?" + "&" * 10000 + "a=1")


# --- parsed_body: selection, partial body, content-length ---------------------------


def test_parse_body_false_leaves_both_keys_out() -> None:
    request = make_request(content_type="application/json", body="{not json")
    doc = build_input(request, parse_body=False)
    assert "parsed_body" not in doc
    assert "truncated_body" not in doc


def test_partial_body_header_wins() -> None:
    headers = {"x-envoy-auth-partial-body": "true"}
    assert body_result("application/json", '{"a":1}', headers=headers) == (None, True)
    assert body_result(None, "", headers=headers) == (None, True)
    assert body_result("application/json", "{broken", headers=headers) == (None, True)
    # Only the exact value "true" counts.
    for value in ("false", "True", "TRUE", "1"):
        assert body_result("application/json", '{"a":1}', headers={"x-envoy-auth-partial-body": value}) == (
            {"a": 1},
            False,
        )


@pytest.mark.parametrize(
    ("content_type", "parsed"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/json-patch+json", True),  # substring match
        ("text/plain; see=application/json", True),
        ("APPLICATION/JSON", False),  # case-sensitive
        ("application/vnd.api+json", False),
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_content_type_selection(content_type: str | None, parsed: bool) -> None:
    expected = ({"a": 1}, False) if parsed else (None, False)
    assert body_result(content_type, '{"a":1}') == expected


@pytest.mark.parametrize(
    "content_type", ["application/grpc", "application/grpc+proto", "application/grpc-web"]
)
def test_grpc_bodies_are_not_parsed(content_type: str) -> None:
    # Needs a proto descriptor set, which this sidecar does not support.
    assert body_result(content_type, raw_body=b"\x00\x00\x00\x00\x02\x08\x01") == (None, False)


def test_json_wins_over_later_types_in_the_plugin_order() -> None:
    assert body_result("multipart/form-data; boundary=application/json", "[1]") == ([1], False)


def test_no_body_gives_null_even_with_content_length() -> None:
    headers = {"content-length": "100"}
    for ctype in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b"):
        assert body_result(ctype, "", headers=headers) == (None, False)


@pytest.mark.parametrize(
    ("content_length", "expected"),
    [
        ("7", ({"a": 1}, False)),
        ("6", ({"a": 1}, False)),
        ("0", ({"a": 1}, False)),
        ("-1", ({"a": 1}, False)),  # unknown
        ("-5", ({"a": 1}, False)),
        ("+7", ({"a": 1}, False)),
        ("007", ({"a": 1}, False)),
        ("8", (None, True)),
        ("+8", (None, True)),
        ("9223372036854775807", (None, True)),
    ],
)
def test_content_length_truncation(content_length: str, expected: tuple[Any, bool]) -> None:
    assert body_result("application/json", '{"a":1}', headers={"content-length": content_length}) == expected


def test_content_length_counts_bytes_not_characters() -> None:
    body = '"é"'  # 3 characters, 4 bytes
    assert body_result("application/json", body, headers={"content-length": "4"}) == ("é", False)
    assert body_result("application/json", body, headers={"content-length": "5"}) == (None, True)


def test_truncated_raw_body_is_not_a_utf8_error() -> None:
    # A cut through a multi-byte character must read as truncation.
    raw = '{"a":"é'.encode()[:-1]
    assert body_result("application/json", raw_body=raw, headers={"content-length": "20"}) == (None, True)


@pytest.mark.parametrize(
    "content_length", ["abc", "", " 7", "7 ", "1.0", "0x10", "7,7", "1_0", "\u0667", "9223372036854775808"]
)
def test_bad_content_length_is_rejected(content_length: str) -> None:
    with pytest.raises(BadRequest, match="content-length"):
        body_result("application/json", '{"a":1}', headers={"content-length": content_length})


# --- parsed_body: JSON --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"a": [1, "x", true, null, {"b": {}}]}', {"a": [1, "x", True, None, {"b": {}}]}),
        ("[1,2]", [1, 2]),
        ('"s"', "s"),
        ("42", 42),
        ("true", True),
        ("null", None),
        (' \r\n\t{"a":1} \n', {"a": 1}),
        ('{"a":1,"a":2}', {"a": 2}),  # last duplicate wins, as in Go
        ('"a\\/b"', "a/b"),
        ('"\\u00e9\\ud83d\\ude00"', "é😀"),
        ("-0", 0),
        ("1.5", 1.5),
        ("0.1", 0.1),
        ("1E2", 100.0),
        ("-2.5e-3", -0.0025),
        ("5e-324", 5e-324),
        ("18446744073709551615", 18446744073709551615),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("[-123456789012345678901234567890]", [-123456789012345678901234567890]),
    ],
)
def test_json_body(body: str, expected: Any) -> None:
    parsed, truncated = body_result("application/json", body)
    assert parsed == expected
    assert type(parsed) is type(expected)
    assert truncated is False


def test_json_big_integers_stay_exact_through_the_opa_body() -> None:
    big = 2**70 + 1
    doc = build_input(make_request(content_type="application/json", body=f'{{"n":{big},"f":0.5}}'))
    assert doc["parsed_body"] == {"n": big, "f": 0.5}
    assert json.loads(opa_request_body(doc))["input"]["parsed_body"]["n"] == big


@pytest.mark.parametrize(
    "body",
    [
        "{broken",
        " ",
        '{"a":1} x',
        '{"a":1}{"b":2}',
        "NaN",
        "[Infinity]",
        "[1,]",
        "{'a':1}",
        '"\x01"',
        '"\\ud800"',  # lone surrogate: Go would write U+FFFD; refused here
        "\ufeff{}",
    ],
)
def test_invalid_json_body_is_rejected(body: str) -> None:
    with pytest.raises(BadRequest, match="JSON"):
        body_result("application/json", body)
    with pytest.raises(BadRequest, match="JSON"):
        body_result("application/json", raw_body=body.encode())


def test_empty_json_body_is_null_not_an_error() -> None:
    assert body_result("application/json", "") == (None, False)


@pytest.mark.parametrize(
    "body",
    ["0.10000000000000000001", "1e400", "-1e400", "1e-400", "[1.00000000000000000000000001]", "1" * 5000],
)
def test_json_numbers_that_cannot_be_kept_exact_are_rejected(body: str) -> None:
    with pytest.raises(BadRequest, match="number"):
        body_result("application/json", body)


def test_json_nesting_limit() -> None:
    ok = "[" * MAX_BODY_JSON_DEPTH + "]" * MAX_BODY_JSON_DEPTH
    assert body_result("application/json", ok)[0] is not None
    deep = "[" * (MAX_BODY_JSON_DEPTH + 1) + "]" * (MAX_BODY_JSON_DEPTH + 1)
    with pytest.raises(BadRequest, match="deeply"):
        body_result("application/json", deep)
    # The deepest accepted body still serialises on orjson's fast path.
    doc = build_input(make_request(content_type="application/json", body=ok))
    assert orjson.dumps(doc)


def test_raw_body_fallback_and_precedence() -> None:
    assert body_result("application/json", raw_body=b'{"raw":1}') == ({"raw": 1}, False)
    assert body_result("application/json", '{"body":1}', raw_body=b'{"raw":1}') == ({"body": 1}, False)
    with pytest.raises(BadRequest, match="UTF-8"):
        body_result("application/json", raw_body=b'"\xff"')


def test_body_parse_error_message_holds_no_content() -> None:
    secret = "s3cr3t-token-value"
    with pytest.raises(BadRequest) as info:
        body_result("application/json", '{"token": "' + secret + '"')
    assert secret not in str(info.value)


# --- parsed_body: form --------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


def test_form_body() -> None:
    assert body_result(FORM, "a=1&b=x+y&a=%C3%A9&c") == ({"a": ["1", "é"], "b": ["x y"], "c": [""]}, False)
    assert body_result(f"{FORM}; charset=utf-8", raw_body=b"k=v") == ({"k": ["v"]}, False)
    assert body_result(FORM, "&") == ({}, False)


def test_form_body_content_length_rule() -> None:
    assert body_result(FORM, "a=1", headers={"content-length": "4"}) == (None, True)
    assert body_result(FORM, "a=1", headers={"content-length": "3"}) == ({"a": ["1"]}, False)


@pytest.mark.parametrize("body", ["a=1;b=2", "a=%zz", "a=%ff"])
def test_form_body_errors_are_rejected(body: str) -> None:
    with pytest.raises(BadRequest, match="form body"):
        body_result(FORM, body)


def test_form_raw_body_must_be_utf8() -> None:
    with pytest.raises(BadRequest, match="UTF-8"):
        body_result(FORM, raw_body=b"a=\xff")


# --- parsed_body: multipart ---------------------------------------------------------

MULTIPART = "multipart/form-data; boundary=XyZ"


def multipart(*parts: str, nl: str = "\r\n", boundary: str = "XyZ") -> str:
    """Parts given as 'headers\\n\\nbody' with '\\n' line ends, re-joined with ``nl``."""
    out = ""
    for part in parts:
        head, _, body = part.partition("\n\n")
        out += f"--{boundary}{nl}" + head.replace("\n", nl) + nl + nl + body + nl
    return out + f"--{boundary}--{nl}"


def test_multipart_body() -> None:
    body = multipart(
        'Content-Disposition: form-data; name="a"\n\n1',
        'Content-Disposition: form-data; name="file"; filename="f.txt"\n'
        "Content-Type: text/plain\n\nline1\r\nline2",
        'Content-Disposition: form-data; name="meta"\nContent-Type: application/json\n\n{"k": [1, 2]}',
        'Content-Disposition: form-data; name="a"\n\n2',
        "Content-Disposition: form-data\n\nunnamed",
        'Content-Disposition: attachment; name="att"\n\nnot form-data',
        "Content-Type: text/plain\n\nno disposition",
        "content-disposition: FORM-DATA; NAME=empty\n\n",
    )
    expected = {
        "a": ["1", "2"],
        "file": ["line1\r\nline2"],
        "meta": [{"k": [1, 2]}],
        "empty": [""],
    }
    assert body_result(MULTIPART, body) == (expected, False)
    assert body_result(MULTIPART, raw_body=body.encode()) == (expected, False)


def test_multipart_lf_line_ends_preamble_and_epilogue() -> None:
    body = "preamble\n" + multipart('Content-Disposition: form-data; name="a"\n\nv', nl="\n") + "epilogue"
    assert body_result(MULTIPART, body) == ({"a": ["v"]}, False)


def test_multipart_boundary_lookalikes_stay_in_the_content() -> None:
    content = "x\r\n--XyZabc\r\n--XyZ-y"
    body = multipart(f'Content-Disposition: form-data; name="a"\n\n{content}')
    assert body_result(MULTIPART, body) == ({"a": [content]}, False)


def test_multipart_quoted_boundary_and_header_details() -> None:
    body = multipart(
        'Content-Disposition: form-data;\n name="a b";  filename="c:\\\\x"\n\nv',
        boundary="a b:c",
    )
    assert body_result('multipart/form-data; boundary="a b:c";', body) == ({"a b": ["v"]}, False)


@pytest.mark.parametrize(
    ("name_param", "expected"),
    [
        ("plain", {"plain": ["v"]}),
        ('"a\\"b"', {'a"b': ["v"]}),  # a backslash escapes a tspecial
        ('"a\\b"', {"a\\b": ["v"]}),  # ... and is kept before anything else
        ('"a\\\\"', {"a\\": ["v"]}),
        ('"a\\"', {}),  # unterminated: no name, part skipped (as Go)
        ('""', {}),
        ("a b", {}),
    ],
)
def test_multipart_name_parameter_quoting(name_param: str, expected: dict[str, list[str]]) -> None:
    body = multipart(f"Content-Disposition: form-data; name={name_param}\n\nv")
    assert body_result(MULTIPART, body) == (expected, False)


def test_multipart_empty_part_right_after_headers() -> None:
    body = '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n--XyZ--\r\n'
    assert body_result(MULTIPART, body) == ({"a": [""]}, False)


def test_multipart_without_parts_or_boundary() -> None:
    assert body_result(MULTIPART, "--XyZ--") == ({}, False)
    assert body_result("multipart/form-data", "--XyZ--\r\n") == (None, False)
    assert body_result("multipart/form-data; charset=utf-8", "anything") == (None, False)


def test_multipart_content_length_rule() -> None:
    body = multipart('Content-Disposition: form-data; name="a"\n\nv')
    headers = {"content-length": str(len(body) + 1)}
    assert body_result(MULTIPART, body, headers=headers) == (None, True)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (MULTIPART, '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nv'),  # no closing boundary
        (MULTIPART, '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n--XyZ'),
        (MULTIPART, "--XyZ\r\nContent-Disposition: form-data; name=a"),  # headers not terminated
        (MULTIPART, "no boundary at all"),
        (MULTIPART, "--XyZ\r\nno colon\r\n\r\nv\r\n--XyZ--"),
        (MULTIPART, "--XyZ\r\n leading: space\r\n\r\nv\r\n--XyZ--"),
        (MULTIPART, "--XyZ\r\nbad(name): x\r\n\r\nv\r\n--XyZ--"),
        (MULTIPART, "--XyZ\r\nX: a\x01b\r\n\r\nv\r\n--XyZ--"),
        (MULTIPART, '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n--XyZ junk\r\n'),
        (
            MULTIPART,
            multipart('Content-Disposition: form-data; name="j"\nContent-Type: application/json\n\n{x'),
        ),
        (
            MULTIPART,
            multipart(
                'Content-Disposition: form-data; name="q"\n'
                "Content-Transfer-Encoding: quoted-printable\n\na=3D"
            ),
        ),
        (MULTIPART, multipart("Content-Disposition: form-data; name*=utf-8''a\n\nv")),
        ("multipart/form-data; boundary", "--XyZ--"),
        ("multipart/form-data; boundary=a; boundary=b", "--a--"),
        ('multipart/form-data; boundary=""', "----"),
        ("multipart/form-data/x; boundary=XyZ", "--XyZ--"),
    ],
)
def test_malformed_multipart_is_rejected(content_type: str, body: str) -> None:
    with pytest.raises(BadRequest):
        body_result(content_type, body)


def test_multipart_binary_part_is_rejected() -> None:
    # Go would hand the policy a string holding the raw bytes; refused here.
    raw = b'--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\n\x89PNG\xff\r\n--XyZ--\r\n'
    with pytest.raises(BadRequest, match="UTF-8"):
        body_result(MULTIPART, raw_body=raw)


def test_multipart_non_utf8_header_bytes() -> None:
    # Bytes that are not UTF-8 matter only where they reach the document.
    ok = (
        b'--XyZ\r\nX-Other: \xe9\r\nContent-Disposition: form-data; name="a"; filename="\xe9.txt"\r\n'
        b"\r\nv\r\n--XyZ--\r\n"
    )
    assert body_result(MULTIPART, raw_body=ok) == ({"a": ["v"]}, False)
    bad_name = b'--XyZ\r\nContent-Disposition: form-data; name="\xe9"\r\n\r\nv\r\n--XyZ--\r\n'
    with pytest.raises(BadRequest, match="UTF-8"):
        body_result(MULTIPART, raw_body=bad_name)


def test_multipart_unparseable_disposition_skips_the_part() -> None:
    # As Go's Part.FormName: a disposition that does not parse has no name.
    body = multipart(
        'Content-Disposition: form-data; name="a"; name="b"\n\nv', "Content-Disposition: ;;\n\nw"
    )
    assert body_result(MULTIPART, body) == ({}, False)


# --- opa_request_body ---------------------------------------------------------------


def test_opa_request_body() -> None:
    doc = build_input(make_request("/a?b=c", content_type="application/json", body='{"x":"é"}'))
    payload = opa_request_body(doc)
    assert payload.startswith(b'{"input":{')
    assert orjson.loads(payload) == {"input": doc}


def test_opa_request_body_falls_back_for_big_integers() -> None:
    doc = {"n": 2**64, "m": -(2**63) - 1, "s": "é"}
    assert (
        opa_request_body(doc)
        == b'{"input":{"n":18446744073709551616,"m":-9223372036854775809,"s":"\xc3\xa9"}}'
    )


# --- property: any CheckRequest gives a document or BadRequest ----------------------

_PATH_ATOMS = [
    "/",
    "?",
    "&",
    "=",
    ";",
    "%",
    "+",
    "#",
    ".",
    "a",
    "B",
    "2",
    "é",
    "%2F",
    "%2f",
    "%zz",
    "%C3",
    "%A9",
]
_CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/grpc",
    FORM,
    MULTIPART,
    "multipart/form-data",
    'multipart/form-data; boundary="XyZ"',
    "multipart/form-data; boundary=",
    "text/plain",
]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
_struct_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_multipart_parts = st.lists(
    st.tuples(
        st.sampled_from(
            [
                'Content-Disposition: form-data; name="a"',
                'Content-Disposition: form-data; name="j"\r\nContent-Type: application/json',
                "Content-Disposition: form-data",
                "X: y",
                "",
            ]
        ),
        st.text(max_size=20) | _json_values.map(json.dumps),
    ),
    max_size=3,
).map(lambda parts: "".join(f"--XyZ\r\n{h}\r\n\r\n{b}\r\n" for h, b in parts) + "--XyZ--\r\n")
_bodies = st.one_of(
    st.text(max_size=40),
    _json_values.map(json.dumps),
    st.text(alphabet="ab=&;%+2Fzé", max_size=30),
    _multipart_parts,
    _multipart_parts.map(lambda body: body[: len(body) // 2]),
)


@st.composite
def check_requests(draw: st.DrawFn) -> CheckRequest:
    path = "".join(draw(st.lists(st.sampled_from(_PATH_ATOMS), max_size=12)))
    headers = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
    if draw(st.booleans()):
        headers["content-type"] = draw(st.sampled_from(_CONTENT_TYPES) | st.text(max_size=12))
    if draw(st.booleans()):
        headers["content-length"] = draw(st.integers(-3, 200).map(str) | st.text(max_size=4))
    if draw(st.booleans()):
        headers["x-envoy-auth-partial-body"] = draw(st.sampled_from(["true", "false"]))
    request = make_request(path, headers=headers, principal=draw(st.text(max_size=5)))
    http = request.attributes.request.http
    if draw(st.booleans()):
        http.body = draw(_bodies)
    else:
        http.raw_body = draw(st.binary(max_size=40) | _bodies.map(lambda b: b.encode()))
    http.size = draw(st.integers(-(2**63), 2**63 - 1))
    if draw(st.booleans()):
        md = request.attributes.metadata_context.filter_metadata["ns"]
        md.update(draw(st.dictionaries(st.text(max_size=5), _struct_values, max_size=3)))
    return request


def _holds_big_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(_holds_big_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_big_int(v) for v in value)
    return False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=check_requests(), parse_body=st.booleans())
def test_any_request_gives_a_document_or_bad_request(request: CheckRequest, parse_body: bool) -> None:
    try:
        doc = build_input(request, parse_body=parse_body)
    except BadRequest as exc:
        assert str(exc)
        return
    assert isinstance(doc, dict)
    payload = opa_request_body(doc)
    assert json.loads(payload) == {"input": doc}  # exact round trip (floats included)
    if not _holds_big_int(doc):
        assert orjson.loads(orjson.dumps(doc)) == doc
