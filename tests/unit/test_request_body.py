"""The body the policy sees: complete or marked truncated, parsed by its media
type, and refused wherever application parsers could read it differently."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from sidecar._proto.envoy.service.auth.v3 import external_auth_pb2
from sidecar.envoy.input import BadRequest, build_input

LIMIT = 8192
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=XyZ"


def make_request(
    *,
    content_type: str | None = None,
    body: str = "",
    raw_body: bytes = b"",
    headers: dict[str, str] | None = None,
    path: str = "/",
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = path
    http.headers.update(headers or {})
    if content_type is not None:
        http.headers["content-type"] = content_type
    http.body = body
    http.raw_body = raw_body
    return request


def view(limit: int = LIMIT, **kwargs: Any) -> tuple[Any, bool]:
    doc = build_input(make_request(**kwargs), envoy_body_limit=limit)
    return doc["parsed_body"], doc["truncated_body"]


def refused(match: str, limit: int = LIMIT, **kwargs: Any) -> BadRequest:
    with pytest.raises(BadRequest, match=match) as info:
        build_input(make_request(**kwargs), envoy_body_limit=limit)
    return info.value


# --- 1. body completeness -------------------------------------------------------------


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
def test_body_with_matching_content_length_is_complete_up_to_the_limit(size: int) -> None:
    body = "x" * size
    headers = {"content-length": str(size), "x-envoy-auth-partial-body": "false"}
    assert view(content_type="text/plain", body=body, headers=headers) == (None, False)


def test_chunked_or_http2_body_that_fills_the_limit_counts_as_truncated() -> None:
    # Envoy says "false" when the buffer fills exactly as the body may go on.
    headers = {"x-envoy-auth-partial-body": "false", "transfer-encoding": "chunked"}
    assert view(content_type=JSON, body="1" * LIMIT, headers=headers) == (None, True)
    assert view(content_type=JSON, body="1" * LIMIT, headers={"x-envoy-auth-partial-body": "false"}) == (
        None,
        True,
    )


def test_body_below_the_limit_without_content_length_is_complete() -> None:
    headers = {"x-envoy-auth-partial-body": "false"}
    text = "a" * (LIMIT - 3)
    assert view(content_type=JSON, body=f'"{text}"', headers=headers) == (text, False)


def test_partial_body_flag_and_longer_content_length_mean_truncated() -> None:
    assert view(content_type=JSON, body="{}", headers={"x-envoy-auth-partial-body": "true"}) == (None, True)
    assert view(content_type=JSON, body="{}", headers={"content-length": "3"}) == (None, True)


def test_announced_body_that_was_not_forwarded_is_truncated() -> None:
    # Body buffering off for this route (no flag), yet the upstream gets a body.
    assert view(content_type=JSON, headers={"content-length": "10"}) == (None, True)
    assert view(content_type=JSON, headers={"transfer-encoding": "chunked"}) == (None, True)
    assert view(limit=0, content_type=JSON, headers={"content-length": "10"}) == (None, True)


def test_empty_body_is_complete() -> None:
    assert view(headers={"content-length": "0"}) == (None, False)
    assert view(headers={"transfer-encoding": "chunked", "x-envoy-auth-partial-body": "false"}) == (
        None,
        False,
    )
    assert view() == (None, False)


def test_body_over_the_configured_limit_is_refused_413() -> None:
    error = refused("over --envoy-max-request-bytes", limit=16, content_type=JSON, body="1" * 17)
    assert error.http_status == 413


@pytest.mark.parametrize("content_length", ["-1", "+3", " 3", "3x", "", "99999999999999999999"])
def test_malformed_content_length_is_refused(content_length: str) -> None:
    refused(
        "content-length|space at an end",
        content_type=JSON,
        body="{}",
        headers={"content-length": content_length},
    )


def test_content_length_shorter_than_the_forwarded_body_is_refused() -> None:
    refused("longer than its content-length", content_type=JSON, body="{}  ", headers={"content-length": "2"})


# --- 2. media types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/problem+json",
        "application/vnd.api+JSON",
    ],
)
def test_json_media_types_are_parsed_as_json(content_type: str) -> None:
    assert view(content_type=content_type, body='{"a": 1}') == ({"a": 1}, False)


@pytest.mark.parametrize(
    "content_type",
    ['text/plain; see="application/json"', "text/json", "application/jsonx", "application/xml"],
)
def test_other_media_types_are_not_parsed_even_when_they_mention_json(content_type: str) -> None:
    assert view(content_type=content_type, body='{"a": 1}') == (None, False)


@pytest.mark.parametrize(
    ("content_type", "why"),
    [
        ("application/json,text/plain", "parameter list"),  # a repeated header, joined by Envoy
        ("application/json, application/json", "parameter list"),
        ("application/json; charset=utf-8; charset=utf-8", "repeats"),
        ("application/json;", "parameter list"),
        ("application/json;;charset=utf-8", "parameter list"),
        ('application/json; charset="utf\\-8"', "parameter list"),
        ("application/json; charset*=utf-8''x", "parameter list|RFC 2231"),
        ("application/json; charset=latin-1", "charset"),
        ("application/json; charset=utf-16", "charset"),
        ("application/x-url-encoded", "form alias"),
        ("json", "media type"),
        (" application/json", "space at an end"),
        ("application/json \t", "space at an end"),
        ("application/json; a=é", "printable ASCII"),
        ("", "media type"),
    ],
)
def test_unparseable_or_ambiguous_content_type_is_refused(content_type: str, why: str) -> None:
    error = refused(why, content_type=content_type, body='{"a": 1}')
    assert content_type.strip() not in str(error) or not content_type.strip()


def test_body_without_content_type_is_refused() -> None:
    refused("no content-type", body='{"a": 1}')


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, "not json"),
        (JSON, '{"a": 1, "a": 2}'),
        (JSON, '{"b": {"a": 1, "a": 2}}'),
        (JSON, '\ufeff{"a": 1}'),
        (JSON, "NaN"),
        (JSON, '{"a": 1}{"b": 2}'),
        (JSON, '"\\ud800"'),
        (JSON, "0.1000000000000000055511151231257827"),
        (FORM, "a=1&a=2"),
        (FORM, "a=1&b"),
        (FORM, "a=1&&b=2"),
        (FORM, "a=1;b=2"),
        (FORM, "a=%zz"),
        (FORM, "a=%ff"),
        (FORM, "user=é"),  # Starlette reads raw bytes as Latin-1, werkzeug as UTF-8
        (FORM, "\ufeffa=1"),
    ],
)
def test_body_that_is_not_what_its_type_declares_or_is_ambiguous_is_refused(
    content_type: str, body: str
) -> None:
    refused(".", content_type=content_type, body=body)


def test_form_body() -> None:
    assert view(content_type=FORM, body="a=1&b=x+y&c=%26") == ({"a": ["1"], "b": ["x y"], "c": ["&"]}, False)
    assert view(content_type=FORM + "; charset=utf-8", body="a=") == ({"a": [""]}, False)


def test_json_body_keeps_numbers_exact() -> None:
    parsed, _ = view(content_type=JSON, body='{"n": 12345678901234567890123, "f": 0.5, "e": 1e2}')
    assert parsed == {"n": 12345678901234567890123, "f": 0.5, "e": 100.0}


# --- 3. multipart: canonical or refused --------------------------------------------------


def part(name: str, content: str, extra: str = "") -> str:
    return f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n{content}\r\n'


def test_canonical_multipart_is_parsed() -> None:
    body = (
        part("action", "read")
        + part("file", "hello", '; filename="a.txt"\r\nContent-Type: text/plain')
        + '--XyZ\r\nContent-Disposition: form-data; name="j"\r\nContent-Type: application/json\r\n\r\n'
        + '{"k": [1]}\r\n--XyZ--\r\n'
    )
    assert view(content_type=MULTIPART, body=body) == (
        {"action": ["read"], "file": ["hello"], "j": [{"k": [1]}]},
        False,
    )
    assert view(content_type='multipart/form-data; boundary="XyZ"', body=part("a", "b") + "--XyZ--") == (
        {"a": ["b"]},
        False,
    )


def test_multipart_content_may_hold_line_ends_and_dashes() -> None:
    body = part("a", "line1\r\nline2\n--Xy\r\n-- XyZ") + "--XyZ--\r\n"
    assert view(content_type=MULTIPART, body=body) == ({"a": ["line1\r\nline2\n--Xy\r\n-- XyZ"]}, False)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (part("a", "1").replace("\r\n", "\n") + "--XyZ--\n", "start|boundary"),  # LF-only line ends
        ("preamble\r\n" + part("a", "1") + "--XyZ--\r\n", "start"),
        (part("a", "1") + "--XyZ--\r\nepilogue", "after its closing"),
        (part("a", "1").replace("--XyZ\r\n", "--XyZ \r\n") + "--XyZ--\r\n", "start"),
        (part("a", "1") + part("b", "2").replace("--XyZ\r\n", "--XyZ\t\r\n") + "--XyZ--", "trailing"),
        (part("a", "1") + part("a", "2") + "--XyZ--", "repeats a field name"),
        (part("a", '1\n--XyZ\nContent-Disposition: form-data; name="b"\n\n2') + "--XyZ--", "outside"),
        (part("a", "1\r--XyZ") + "--XyZ--", "outside"),
        (part("a", "1") + "--XyZ", "closing|trailing"),
        (part("a", "1"), "closing"),
        (part("a", "1", '; name="b"') + "--XyZ--", "Content-Disposition"),
        (part("a", "1", '; filename="x"; filename="y"') + "--XyZ--", "Content-Disposition"),
        (part("a", "1", "; filename*=UTF-8''x") + "--XyZ--", "Content-Disposition"),
        (part("a", "1", '; size="3"') + "--XyZ--", "Content-Disposition"),
        (part("a", "1", '; filename=""') + "--XyZ--", "Content-Disposition"),
        (part('a\\"b', "1") + "--XyZ--", "Content-Disposition"),
        (part("a%22b", "1") + "--XyZ--", "Content-Disposition"),
        (part("", "1") + "--XyZ--", "Content-Disposition"),
        (part("é", "1") + "--XyZ--", "malformed"),
        (part("a", "1").replace("form-data;", "attachment;") + "--XyZ--", "Content-Disposition"),
        (part("a", "1").replace('name="a"', "name=a") + "--XyZ--", "Content-Disposition"),
        (part("a", "1").replace("form-data; ", "form-data;") + "--XyZ--", "Content-Disposition"),
        (part("a", "1").replace("Content-Disposition: ", "Content-Disposition:") + "--XyZ--", "malformed"),
        (part("a", "1", "\r\n continued") + "--XyZ--", "malformed"),
        (part("a", "1", "\r\nContent-Transfer-Encoding: base64") + "--XyZ--", "other than"),
        (part("a", "1", '\r\nContent-Disposition: form-data; name="b"') + "--XyZ--", "repeats a header"),
        (
            part("a", "1", "\r\nContent-Type: text/plain\r\nContent-Type: application/json") + "--XyZ--",
            "repeats",
        ),
        (part("a", "x", "\r\nContent-Type: application/json") + "--XyZ--", "JSON"),
        (part("a", "1", "\r\nContent-Type: text/plain; charset=latin-1") + "--XyZ--", "charset"),
        ("--XyZ\r\n\r\n1\r\n--XyZ--", "no Content-Disposition"),
        ('--XyZ\r\nContent-Disposition: form-data; name="a"\r\n1\r\n--XyZ--', "not terminated"),
    ],
)
def test_non_canonical_multipart_is_refused(body: str, why: str) -> None:
    refused(why, content_type=MULTIPART, body=body)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "b" * 71,
        'multipart/form-data; boundary="a b "',
        'multipart/form-data; boundary="a\\"b"',
        "multipart/form-data; boundary=XyZ; boundary=XyZ",
        "multipart/form-data; charset=latin-1; boundary=XyZ",
    ],
)
def test_multipart_boundary_must_be_plain(content_type: str) -> None:
    refused(".", content_type=content_type, body=part("a", "1") + "--XyZ--")


def test_multipart_without_parts() -> None:
    assert view(content_type=MULTIPART, body="--XyZ--\r\n") == ({}, False)


# --- 4. bytes as sent -------------------------------------------------------------------


def test_raw_body_is_read_like_body_and_shown_as_text() -> None:
    doc = build_input(make_request(content_type=JSON, raw_body=b'{"a": "\xc3\xa9"}'))
    http = doc["attributes"]["request"]["http"]
    assert http["body"] == '{"a": "é"}'
    assert base64.b64decode(http["rawBody"]) == b'{"a": "\xc3\xa9"}'
    assert doc["parsed_body"] == {"a": "é"}
    string_doc = build_input(make_request(content_type=JSON, body='{"a": "é"}'))
    assert string_doc["parsed_body"] == doc["parsed_body"]
    assert string_doc["attributes"]["request"]["http"]["body"] == http["body"]


def test_binary_raw_body_is_carried_exactly_and_not_parsed() -> None:
    data = b"\x89PNG\r\n\x1a\n\xff\x00"
    doc = build_input(make_request(content_type="image/png", raw_body=data))
    http = doc["attributes"]["request"]["http"]
    assert "body" not in http
    assert base64.b64decode(http["rawBody"]) == data
    assert (doc["parsed_body"], doc["truncated_body"]) == (None, False)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        (JSON, b'{"a": "\xff"}'),
        (FORM, b"a=\xff"),
        (MULTIPART, (part("a", "?") + "--XyZ--").encode().replace(b"?", b"\xff")),
    ],
)
def test_parsed_body_that_is_not_utf8_is_refused(content_type: str, data: bytes) -> None:
    refused("UTF-8|beyond ASCII", content_type=content_type, raw_body=data)


def test_string_body_with_a_bang_is_refused() -> None:
    # Envoy writes "!" for each byte that is not UTF-8 when it sends the body as a string.
    refused("pack_as_bytes", content_type="text/plain", body="caf!")
    assert view(content_type="text/plain", raw_body=b"caf!") == (None, False)


@pytest.mark.parametrize("value", ["caf!", "caf\u00e9", "a\x01b", "\u00ff", " admin", "admin\t"])
def test_string_header_value_that_may_hide_replaced_bytes_is_refused(value: str) -> None:
    refused("header value", headers={"x-user": value})


@pytest.mark.parametrize("path", ["/x?q=caf!", "/café"])
def test_string_path_that_may_hide_replaced_bytes_is_refused(path: str) -> None:
    # Over HTTP/2 Envoy writes "!" for a query's bytes that are not UTF-8.
    refused("header value", path=path)


def raw_header_request(*entries: tuple[str, bytes], path: str = "/") -> external_auth_pb2.CheckRequest:
    request = make_request(path=path)
    for key, raw in entries:
        request.attributes.request.http.header_map.headers.add(key=key, raw_value=raw)
    return request


def test_raw_headers_are_exact_and_joined_like_envoy_joins_them() -> None:
    request = raw_header_request((":path", b"/"), ("x-tag", b"caf!"), ("x-tag", b"b"), ("cookie", b"a=1"))
    doc = build_input(request)
    assert doc["attributes"]["request"]["http"]["headers"] == {
        ":path": "/",
        "x-tag": "caf!,b",
        "cookie": "a=1",
    }
    entries = doc["attributes"]["request"]["http"]["headerMap"]["headers"]
    assert base64.b64decode(entries[1]["rawValue"]) == b"caf!"


@pytest.mark.parametrize("raw", [b"caf\xe9", b"caf\xc3\xa9", b"a\x00b", b"a\r\nb", b"admin ", b"\tadmin"])
def test_raw_header_bytes_outside_printable_ascii_are_refused(raw: bytes) -> None:
    # Applications decode header bytes as Latin-1 while the policy reads UTF-8.
    with pytest.raises(BadRequest, match="outside printable ASCII"):
        build_input(raw_header_request((":path", b"/"), ("x-user", raw)))


def test_raw_path_must_match_the_path_field() -> None:
    with pytest.raises(BadRequest, match=":path"):
        build_input(raw_header_request((":path", b"/x?q=a"), path="/x?q=caf!"))


def test_two_different_header_sets_are_refused() -> None:
    request = raw_header_request((":path", b"/"), ("x-user", b"alice"))
    request.attributes.request.http.headers["x-user"] = "mallory"
    with pytest.raises(BadRequest, match="two different header sets"):
        build_input(request)
    same = raw_header_request((":path", b"/"), ("x-user", b"alice"))
    same.attributes.request.http.headers.update({":path": "/", "x-user": "alice"})
    assert build_input(same)["attributes"]["request"]["http"]["headers"]["x-user"] == "alice"


def test_raw_headers_decide_the_body_view() -> None:
    request = raw_header_request((":path", b"/"), ("content-type", b"application/json"))
    request.attributes.request.http.raw_body = b'{"a": 1}'
    assert build_input(request)["parsed_body"] == {"a": 1}


def test_two_different_bodies_are_refused() -> None:
    refused("two different bodies", content_type=JSON, body="{}", raw_body=b"[]")
