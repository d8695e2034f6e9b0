"""The CheckRequests both sides get: the shipped policies' cases (from the policy integration
tests), every result shape, the request views the end-to-end tests send, and generated ones.

Each named case says which deliberate difference (tests/peer/deliberate.py) it shows, or
None when the two answers must be the same.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from tests.check_requests import check_request
from tests.peer import deliberate as d
from tests.rego.token_fixtures import API_AUDIENCE, MCP_AUDIENCE, SigningKey, claims

RSA_KEY = SigningKey.rsa("peer-rsa")
EC_KEY = SigningKey.ec("peer-ec")
JWKS = {"keys": [RSA_KEY.public_jwk(), EC_KEY.public_jwk()]}
POLICY_DATA = {"envoy": {"jwks": JWKS}, "agents": {"jwks": JWKS}}


@dataclass(frozen=True)
class Case:
    name: str
    request: CheckRequest
    expect: str | None = None  # the deliberate difference it shows


def _token(key: SigningKey, audience: str, **extra: Any) -> str:
    return key.sign(claims("alice", audience, now=int(time.time()), **extra))


def _bearer(key: SigningKey, audience: str, **extra: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {_token(key, audience, **extra)}"}


def _echo(method: str = "GET", path: str = "/echo", **kwargs: Any) -> CheckRequest:
    headers = {"x-peer-policy": "echo", **kwargs.pop("headers", {})}
    return check_request(method, path, headers=headers, **kwargs)


def _api(method: str, path: str, key: SigningKey, audience: str, **extra: Any) -> CheckRequest:
    return check_request(method, path, headers=_bearer(key, audience, **extra))


def _typed(content_type: str, body: str) -> CheckRequest:
    return _echo("POST", headers={"content-type": content_type}, body=body)


def _json_body(body: str) -> CheckRequest:
    return _typed(JSON, body)


def _mcp(body: Any, **extra: Any) -> CheckRequest:
    text = body if isinstance(body, str) else json.dumps(body)
    headers = {"x-peer-policy": "mcp", "content-type": "application/json", "accept": "application/json"}
    headers.update(_bearer(EC_KEY, MCP_AUDIENCE, scope="mcp:tools tools:search_docs", **extra))
    return check_request("POST", "/mcp", headers=headers, body=text)


def _rpc(request_id: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def _multipart(*parts: tuple[str, str, str | None], preamble: str = "") -> str:
    lines = [preamble] if preamble else []
    for name, value, content_type in parts:
        lines.append("--b0undary")
        lines.append(f'Content-Disposition: form-data; name="{name}"')
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines += ["", value]
    return "\r\n".join([*lines, "--b0undary--", ""])


def _header_map_only() -> CheckRequest:
    # What Envoy sends with encode_raw_headers: the headers as bytes in headerMap only.
    request = _echo()
    http = request.attributes.request.http
    for name, value in list(http.headers.items()):
        entry = http.header_map.headers.add()
        entry.key, entry.raw_value = name, value.encode()
    http.ClearField("headers")
    return request


def _raw_body_json() -> CheckRequest:
    return _echo("POST", headers={"content-type": "application/json"}, raw_body=b'{"raw": [1, 2]}')


def _with_principal() -> CheckRequest:
    return _echo(principal="spiffe://example.org/ns/shop/sa/web", scheme="https")


def _cut_body() -> CheckRequest:
    return _echo(
        "POST", headers={"content-type": "application/json", "content-length": "400"}, body='{"a": 1'
    )


def _partial_body() -> CheckRequest:
    headers = {"content-type": "application/json", "x-envoy-auth-partial-body": "true"}
    return _echo("POST", headers=headers, body='{"a": ')


JSON = "application/json"
MULTIPART = "multipart/form-data; boundary=b0undary"
FORM = "application/x-www-form-urlencoded"
# Both deny alike: the plugin never reads an allow-only key of a deny; the sidecar refuses it.
SHAPES_SAME = [
    "true",
    "false",
    "all-mutations",
    "header-objects",
    "deny-full",
    "deny-bare",
    "deny-status",
    "remove-when-denied",
]
SHAPES_FAIL_CLOSED = [
    "number",
    "missing-allowed",
    "allowed-string",
    "header-number",
    "status-unknown",
    "conflict",
]
SHAPES_STRICTER = ["header-upper", "header-newline", "body-when-allowed"]


PREAMBLED = _multipart(("f", "v", None), preamble="hi")


def named_cases() -> list[Case]:
    shapes = "shapes"
    cases = [
        # envoy/authz, as the policy integration tests and the demo send them
        Case("public-read", check_request("GET", "/public/hello")),
        Case("no-route", check_request("GET", "/private", headers={"x-api-key": "wrong"})),
        Case("not-canonical", check_request("GET", "/public/../admin")),
        Case("no-token", check_request("GET", "/api/orders")),
        Case("scoped-token", _api("GET", "/api/orders", RSA_KEY, API_AUDIENCE, scope="orders:read")),
        Case("token-without-scope", _api("POST", "/api/orders", EC_KEY, API_AUDIENCE, scope="orders:read")),
        Case("token-for-another-audience", _api("GET", "/api/me", RSA_KEY, MCP_AUDIENCE)),
        Case("bad-token", check_request("GET", "/api/me", headers={"authorization": "Bearer not.a.token"})),
        # agents/mcp
        Case("mcp-initialize", _mcp(_rpc(1, "initialize"))),
        Case("mcp-tool-call", _mcp(_rpc(2, "tools/call", {"name": "search_docs", "arguments": {"q": "x"}}))),
        Case("mcp-forbidden-tool", _mcp(_rpc(3, "tools/call", {"name": "delete_repo", "arguments": {}}))),
        Case("mcp-batch", _mcp([_rpc(4, "tools/list"), _rpc(5, "tools/call", {"name": "delete_repo"})])),
        Case("mcp-not-json", _mcp("{not json"), d.PARSE_ERROR_BODY),
        # every result shape
        *(Case(f"shape-{s}", _shapes(shapes, s)) for s in SHAPES_SAME),
        *(Case(f"shape-{s}", _shapes(shapes, s), d.FAIL_CLOSED) for s in SHAPES_FAIL_CLOSED),
        *(Case(f"shape-{s}", _shapes(shapes, s), d.STRICTER_RESULT) for s in SHAPES_STRICTER),
        Case("shape-undefined", _shapes(shapes, "no-such-shape"), d.FAIL_CLOSED),
        Case("shape-builtin-error", _shapes(shapes, "builtin-error"), d.FAIL_CLOSED),
        # what the policy sees: the echo policy returns the whole input
        Case("echo-plain", _echo(path="/a/b/c?x=1&y=two+words&z=%20")),
        Case("echo-https-principal", _with_principal()),
        Case("echo-json", _json_body('{"a": [1, 2.5, "x"], "b": null}')),
        Case("echo-json-raw-body", _raw_body_json(), d.BODY_TEXT),
        Case("echo-plus-json", _typed("application/vnd.api+json", '{"data": {"id": "1"}}'), d.PLUS_JSON),
        Case("echo-json-cut", _cut_body()),
        Case("echo-partial-body", _partial_body()),
        Case("echo-form", _typed(FORM, "a=1&b=two+words")),
        Case("echo-multipart", _typed(MULTIPART, _multipart(("f", "v", None), ("j", '{"k": 1}', JSON)))),
        Case("echo-text-body", _typed("text/plain", "hello")),
        Case("bad-escape-in-path", _echo(path="/a%zz"), d.PARSE_ERROR_BODY),
        Case("semicolon-in-query", _echo(path="/a?x=1;y=2"), d.PARSE_ERROR_BODY),
        Case("bad-json", _json_body("{"), d.PARSE_ERROR_BODY),
        # refused by the sidecar, taken by the plugin
        Case("repeated-query-name", _echo(path="/a?x=1&x=2"), "repeated query or form name"),
        Case("duplicate-json-key", _json_body('{"a": 1, "a": 2}'), "duplicate JSON key"),
        Case("inexact-json-number", _json_body('{"a": 9007199254740993.5}'), "inexact JSON number"),
        Case("multipart-preamble", _typed(MULTIPART, PREAMBLED), d.MULTIPART),
        Case("header-not-ascii", _echo(headers={"x-name": "Zoë"}), d.NOT_ASCII),
        Case("header-with-bang", _echo(headers={"x-name": "hey!"}), "'!' in text headers or a string body"),
        Case("body-without-content-type", _echo("POST", body="a=1"), "body without content-type"),
        Case("headers-in-header-map", _header_map_only(), d.HEADER_MAP),
    ]  # fmt: skip
    return cases


def _shapes(prefix: str, name: str) -> CheckRequest:
    return check_request("GET", f"/{prefix}/{name}", headers={"x-peer-policy": "shapes"})


# -- generated requests -----------------------------------------------------------------------

_SEGMENTS = ["a", "b", "orders", "42", "x y", "%41", "%2F", "caf%C3%A9", "..", "", "+", "%25"]
_QUERY = ["q=1", "q=2", "a=b+c", "e=%20", "flag", "k=v%26w", "x=", "=y", "n=%C3%A9"]
_HEADERS = ["text/plain", "Bearer abc", "a, b", "  padded", "v1", "", "x=1; y=2"]
_BODIES: list[tuple[str | None, str]] = [
    ("application/json", '{"a": 1}'),
    ("application/json", '[1, "two", {"three": 3}]'),
    ("application/json; charset=utf-8", '"text"'),
    ("application/vnd.api+json", '{"data": {"id": "1"}}'),
    (FORM, "a=1&b=2"),
    (FORM, "a=1&a=2"),
    (FORM, "a"),
    (MULTIPART, _multipart(("a", "1", None), ("b", "2", None))),
    ("text/plain", "plain text"),
    (None, '{"no": "type"}'),
]


def generated_cases(count: int, seed: int) -> list[CheckRequest]:
    """Envoy-shaped requests for the echo policy: paths, queries, headers and bodies drawn
    from pieces that each side reads its own way if it can."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        path = "/" + "/".join(rng.choices(_SEGMENTS, k=rng.randint(1, 4)))
        if rng.random() < 0.7:
            path += "?" + "&".join(rng.choices(_QUERY, k=rng.randint(1, 3)))
        headers = {f"x-h{i}": rng.choice(_HEADERS) for i in range(rng.randint(0, 3))}
        kwargs: dict[str, Any] = {}
        method = "GET"
        if rng.random() < 0.6:
            content_type, body = rng.choice(_BODIES)
            method = "POST"
            if content_type:
                headers["content-type"] = content_type
            if rng.random() < 0.3:
                kwargs["raw_body"] = body.encode()
            else:
                kwargs["body"] = body
        requests.append(_echo(method, path, headers=headers, **kwargs))
    return requests
