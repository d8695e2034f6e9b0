"""The OPA server fixture (stand-in on the real engine, or a real `opa`) behaves as OPA's REST API.

With a real `opa` at hand, the module's tests run against it and against the stand-in, so the
stand-in is held to what the real server answers. Everything here holds for both, except where
a test says it checks the stand-in or names a difference its README lists.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fixtures.opa import (
    REPO_ROOT,
    OpaFactory,
    OpaProcess,
    OpaStartError,
    Reply,
    opa_binary,
    send,
    start_opa,
)

POLICIES = Path(__file__).parent / "policies"
PATHS = [
    POLICIES / "authz.rego",
    POLICIES / "authz_test.rego",
    POLICIES / "health.rego",
    POLICIES / "extra.json",
    POLICIES / "tree",
]
MISSING_INPUT = {"code": "api_usage_warning", "message": "'input' key missing from the request"}


# "" starts the stand-in; None the real `opa` when there is one.
SERVERS = [None, ""] if opa_binary() else [""]


@pytest.fixture(
    scope="module", params=SERVERS, ids=["real-opa" if s is None else "stand-in" for s in SERVERS]
)
def opa(request: pytest.FixtureRequest) -> Iterator[OpaProcess]:
    server = start_opa(PATHS, opa_bin=request.param)
    yield server
    server.stop()


def post(
    opa: OpaProcess,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return opa.request("POST", path, payload, headers)


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/json"
    error: dict[str, Any] = reply.json()
    assert error["code"] == code
    assert list(error)[:2] == ["code", "message"]
    # Error bodies are pretty-printed with a two-space indent and one trailing newline.
    assert reply.body.startswith(b'{\n  "code": ') and reply.body.endswith(b"}\n")
    return error


# -- results -----------------------------------------------------------------------------------


def test_defined_result_is_compact_json_with_newline(opa: OpaProcess) -> None:
    reply = post(opa, "/v1/data/test/authz/allow", {"input": {"user": "admin"}})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == b'{"result":true}\n'


def test_default_applies_when_no_rule_matches(opa: OpaProcess) -> None:
    assert post(opa, "/v1/data/test/authz/allow", {"input": {"user": "bob"}}).body == b'{"result":false}\n'


@pytest.mark.parametrize(
    "path",
    [
        "/v1/data/test/authz/alice_only",  # rule exists, no body matches
        "/v1/data/test/authz/no_such_rule",
        "/v1/data/no/such/package",
    ],
)
def test_undefined_is_200_without_result(opa: OpaProcess, path: str) -> None:
    reply = post(opa, path, {"input": {"user": "bob"}})
    assert reply.status == 200
    assert reply.body == b"{}\n"


def test_object_results_sort_keys_sets_and_escape_html(opa: OpaProcess) -> None:
    reply = post(opa, "/v1/data/test/authz/greeting", {"input": {"user": "zoe"}})
    assert reply.json() == {"result": {"hello": "zoe", "html": "<b>&</b>", "tags": ["a", "b"]}}
    assert reply.body.index(b'"hello"') < reply.body.index(b'"html"') < reply.body.index(b'"tags"')
    assert b"<" not in reply.body and b"\\u003cb\\u003e\\u0026" in reply.body


@pytest.mark.parametrize("body", [b"", b"{}", b"null", b'{"input": null}', b'{"other": 1}'])
def test_missing_input_adds_warning(opa: OpaProcess, body: bytes) -> None:
    reply = post(opa, "/v1/data/test/authz/allow", raw=body)
    assert reply.status == 200
    assert reply.json() == {"result": False, "warning": MISSING_INPUT}
    assert list(reply.json()) == ["result", "warning"]


def test_missing_input_warning_on_undefined_result(opa: OpaProcess) -> None:
    assert post(opa, "/v1/data/test/authz/whoami", raw=b"{}").json() == {"warning": MISSING_INPUT}


def test_get_with_input_parameter(opa: OpaProcess) -> None:
    query = quote(json.dumps({"user": "admin"}))
    reply = opa.request("GET", f"/v1/data/test/authz/allow?input={query}")
    assert reply.status == 200
    assert reply.body == b'{"result":true}\n'
    # No input on a GET is not worth a warning.
    assert opa.request("GET", "/v1/data/test/authz/allow").body == b'{"result":false}\n'


def test_get_with_malformed_input_parameter(opa: OpaProcess) -> None:
    error = assert_error(opa.request("GET", "/v1/data/test/authz/allow?input=%7B"), 400, "invalid_parameter")
    assert error["message"].startswith("parameter contains malformed input document: ")


def test_whole_data_document(opa: OpaProcess) -> None:
    reply = post(opa, "/v1/data", {"input": {}})
    assert reply.status == 200
    result = reply.json()["result"]
    assert result["test"]["authz"]["allow"] is False
    assert result["extra"]["from"] == "command line"


def test_pretty_and_metrics_parameters(opa: OpaProcess) -> None:
    path = "/v1/data/test/authz/allow?pretty=true&metrics&strict-builtin-errors&provenance=false&explain=off"
    reply = post(opa, path, {"input": {"user": "admin"}})
    assert reply.status == 200
    assert reply.body.startswith(b"{\n  ")
    body = reply.json()
    assert body["result"] is True
    assert "timer_server_handler_ns" in body["metrics"]
    # `=1` is not true for OPA's boolean parameters.
    assert post(opa, "/v1/data/test/authz/allow?pretty=1", {"input": {}}).body == b'{"result":false}\n'


def test_gzip_request_body(opa: OpaProcess) -> None:
    body = gzip.compress(json.dumps({"input": {"user": "admin"}}).encode())
    reply = post(opa, "/v1/data/test/authz/allow", raw=body, headers={"Content-Encoding": "gzip"})
    assert reply.body == b'{"result":true}\n'


def test_yaml_request_body(opa: OpaProcess) -> None:
    body = b"input:\n  user: admin\n"
    reply = post(opa, "/v1/data/test/authz/allow", raw=body, headers={"Content-Type": "application/x-yaml"})
    assert reply.body == b'{"result":true}\n'


def test_large_answers_are_gzipped_only_when_asked(opa: OpaProcess) -> None:
    body = {"input": {"user": "x" * 2000}}
    plain = post(opa, "/v1/data/test/authz/greeting", body)
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"
    packed = post(opa, "/v1/data/test/authz/greeting", body, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    small = post(opa, "/v1/data/test/authz/allow", {"input": {}}, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers and small.body == b'{"result":false}\n'


def test_path_segments_numbers_and_escaped_slash(opa: OpaProcess) -> None:
    assert post(opa, "/v1/data/a/b/list/1", {"input": {}}).json() == {"result": "one"}
    assert post(opa, "/v1/data/extra/a%2Fb", {"input": {}}).json() == {"result": 7}


def test_path_segment_with_quote_is_refused(opa: OpaProcess) -> None:
    reply = post(opa, "/v1/data/extra/x%22y", {"input": {}})
    assert reply.status in (400, 500)
    assert "result" not in reply.json()


# -- v0 ----------------------------------------------------------------------------------------


def test_v0_returns_bare_value(opa: OpaProcess) -> None:
    reply = post(opa, "/v0/data/test/authz/allow", {"user": "admin"})
    assert reply.status == 200
    assert reply.body == b"true\n"


def test_v0_undefined_rule_is_404_document_undefined(opa: OpaProcess) -> None:
    error = assert_error(
        post(opa, "/v0/data/test/authz/alice_only", {"user": "bob"}), 404, "undefined_document"
    )
    assert error["message"] == "document undefined: data.test.authz.alice_only"


def test_v0_nothing_at_path_is_404_document_missing(opa: OpaProcess) -> None:
    error = assert_error(post(opa, "/v0/data/test/authz/no_such_rule", {}), 404, "undefined_document")
    assert error["message"] == "document missing: data.test.authz.no_such_rule"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b'{"input": @}', b'{"input": {"user": "admin"}', b"\xff\xfe"])
def test_malformed_body_is_400(opa: OpaProcess, body: bytes) -> None:
    error = assert_error(post(opa, "/v1/data/test/authz/allow", raw=body), 400, "invalid_parameter")
    assert error["message"].startswith("body contains malformed input document: ")
    assert "errors" not in error


@pytest.mark.parametrize("body", [b"[1, 2]", b'"admin"', b"42", b"true"])
def test_non_object_body_is_400(opa: OpaProcess, body: bytes) -> None:
    error = assert_error(post(opa, "/v1/data/test/authz/allow", raw=body), 400, "invalid_parameter")
    assert error["message"].startswith("body contains malformed input document: ")


def test_conflict_is_500_with_nested_eval_conflict_error(opa: OpaProcess) -> None:
    reply = post(opa, "/v1/data/test/authz/conflict", {"input": {"a": True, "b": True}})
    error = assert_error(reply, 500, "internal_error")
    assert error["message"] == "error(s) occurred while evaluating query"
    [nested] = error["errors"]
    assert nested["code"] == "eval_conflict_error"
    if opa.real_opa:
        assert nested["message"].startswith("rule data.test.authz.conflict produced conflicting values:\n")
    else:  # the engine behind the stand-in words it as OPA did before (its README lists this)
        assert nested["message"] == "complete rules must not produce multiple outputs"
    assert nested["location"]["file"].endswith("authz.rego")
    assert nested["location"]["row"] in (16, 18)
    assert list(error) == ["code", "message", "errors"]
    # Only one body true: no conflict.
    assert post(opa, "/v1/data/test/authz/conflict", {"input": {"a": True}}).json() == {"result": 1}


def test_builtin_error_is_500_in_strict_mode(opa: OpaProcess) -> None:
    reply = post(opa, "/v1/data/test/authz/number?strict-builtin-errors=true", {"input": {"s": "abc"}})
    error = assert_error(reply, 500, "internal_error")
    [nested] = error["errors"]
    assert nested["code"] == "eval_builtin_error"
    assert nested["message"].startswith("to_number: ")
    assert post(opa, "/v1/data/test/authz/number", {"input": {"s": "12"}}).json() == {"result": 12}


def test_announced_oversize_body_is_refused(opa: OpaProcess) -> None:
    reply = post(
        opa, "/v1/data/test/authz/allow", raw=b"{}", headers={"Content-Length": str(256 * 1024 * 1024 + 1)}
    )
    error = assert_error(reply, 400, "invalid_parameter")
    assert error["message"] == (
        "request body too large: 256 MiB exceeds limit of 268435456 bytes (server.decoding.max_length)"
    )
    assert reply.headers["Connection"] == "close"


# -- routes and HTTP -----------------------------------------------------------------------------


def test_health(opa: OpaProcess) -> None:
    reply = opa.request("GET", "/health")
    assert reply.status == 200
    assert reply.body == b"{}\n"


def test_health_rules(opa: OpaProcess) -> None:
    assert opa.request("GET", "/health/live").body == b"{}\n"
    not_ready = opa.request("GET", "/health/ready")
    assert not_ready.status == 500
    assert "data.system.health.ready" in not_ready.json()["error"]
    assert opa.request("GET", "/health/nothing").status == 500


@pytest.mark.parametrize(
    ("path", "location"),
    [("/v1/data/test/authz/allow/", "/v1/data/test/authz/allow"), ("/health/", "/health")],
)
def test_trailing_slash_redirects(opa: OpaProcess, path: str, location: str) -> None:
    reply = post(opa, path, {"input": {"user": "admin"}}) if "data" in path else opa.request("GET", path)
    assert reply.status == 301
    assert reply.headers["Location"] == location
    assert b"result" not in reply.body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("HEAD", "/health"),
        ("HEAD", "/v1/data/test/authz/allow"),
        ("DELETE", "/v0/data/x"),
    ],
)
def test_wrong_method_is_405_with_empty_body(opa: OpaProcess, method: str, path: str) -> None:
    reply = opa.request(method, path)
    assert reply.status == 405
    assert reply.body == b""


@pytest.mark.parametrize(("method", "path"), [("PUT", "/health"), ("POST", "/health/live")])
def test_wrong_method_on_health_is_405_in_words(opa: OpaProcess, method: str, path: str) -> None:
    reply = opa.request(method, path)
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD"
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.body == b"Method Not Allowed\n"


def test_unknown_route_is_plain_text_404(opa: OpaProcess) -> None:
    reply = opa.request("GET", "/v2/data/test")
    assert reply.status == 404
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.body == b"404 page not found\n"


def test_keep_alive_serves_several_requests_on_one_connection(opa: OpaProcess) -> None:
    conn = opa.connect()
    try:
        replies = []
        for user in ("admin", "bob", "admin", "bob"):
            body = json.dumps({"input": {"user": user}})
            replies.append(send(conn, "POST", "/v1/data/test/authz/allow", body))
            assert conn.sock is not None
            if len(replies) == 1:
                first_socket, local = conn.sock, conn.sock.getsockname()
            assert conn.sock is first_socket and conn.sock.getsockname() == local
        assert [r.json()["result"] for r in replies] == [True, False, True, False]
    finally:
        conn.close()


def test_concurrent_requests(opa: OpaProcess) -> None:
    def ask(i: int) -> tuple[int, Any]:
        user = "admin" if i % 3 == 0 else f"user{i}"
        reply = post(opa, "/v1/data/test/authz/greeting", {"input": {"user": user}})
        return i, reply.json()["result"]["hello"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(ask, range(64)))
    assert all(hello == ("admin" if i % 3 == 0 else f"user{i}") for i, hello in results)


# -- loading ---------------------------------------------------------------------------------------


def test_data_files_are_placed_by_directory(opa: OpaProcess) -> None:
    data = post(opa, "/v1/data", {"input": {}}).json()["result"]
    assert data["top"] == {"level": "yes-root"}  # tree/top.yaml: the named directory is the root
    assert data["a"]["b"]["k"] == 1  # tree/a/b/data.json
    assert data["a"]["sibling"] is True  # extra.json, named on the command line: root
    assert data["c.d"] == {"name": "dotted"}  # tree/c.d/data.yml: a dot stays inside the key
    assert data["test"]["authz_test"]["test_admin_allowed"] is True  # _test.rego is an ordinary module


def test_repository_policy(opa_server: OpaProcess) -> None:
    request = {
        "attributes": {"request": {"http": {"method": "GET", "headers": {}}}},
        "parsed_path": ["public"],
    }
    allowed = post(opa_server, "/v1/data/envoy/authz/allow", {"input": request}).json()["result"]
    assert allowed["allowed"] is True
    request["parsed_path"] = ["private"]
    denied = post(opa_server, "/v1/data/envoy/authz/allow", {"input": request}).json()["result"]
    assert (denied["allowed"], denied["http_status"]) == (False, 403)
    assert denied["headers"] == {"content-type": "application/json"}
    assert json.loads(denied["body"]) == {"error": "forbidden", "reason": "no route permits this request"}


# -- token ----------------------------------------------------------------------------------------


def test_token_is_required_on_every_route(opa_server_factory: OpaFactory) -> None:
    opa = opa_server_factory([POLICIES / "authz.rego"], token="s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        for method, path in (("GET", "/health"), ("POST", "/v1/data/test/authz/allow")):
            reply = opa.request(method, path, b"{}", headers, auth=False)
            error = assert_error(reply, 401, "unauthorized")
            assert error["message"] == "request rejected by administrative policy"
    assert opa.request("GET", "/health").status == 200
    body = json.dumps({"input": {"user": "admin"}})
    assert opa.request("POST", "/v1/data/test/authz/allow", body).body == b'{"result":true}\n'


# -- unix socket and process lifecycle ------------------------------------------------------------


def test_unix_socket(opa_server_factory: OpaFactory) -> None:
    opa = opa_server_factory([POLICIES / "authz.rego"], unix_socket=True)
    assert opa.url.startswith("unix://")
    socket_path = Path(opa.url.removeprefix("unix://"))
    assert socket_path.exists()
    assert opa.request("GET", "/health").body == b"{}\n"
    body = json.dumps({"input": {"user": "admin"}})
    assert opa.request("POST", "/v1/data/test/authz/allow", body).body == b'{"result":true}\n'
    opa.stop()
    assert not socket_path.exists()


def test_stop_leaves_no_process_behind() -> None:
    opa = start_opa([POLICIES / "authz.rego"])
    pid = opa.process.pid
    opa.stop()
    assert opa.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not opa.workdir.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stand_in_exits_zero_on_signal(signum: int) -> None:
    opa = start_opa([POLICIES / "authz.rego"], opa_bin="")
    try:
        opa.process.send_signal(signum)
        assert opa.process.wait(10) == 0
    finally:
        opa.stop()


def run_stand_in(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.opa_server", "--addr", "127.0.0.1:0", *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    "source",
    [
        "package bad\n\nallow { true }\n",  # v0 syntax: parse error
        "package bad\n\nimport rego.v1\n\nallow if { x }\n",  # unsafe variable: compile error
    ],
)
def test_stand_in_refuses_a_bad_policy(tmp_path: Path, source: str) -> None:
    bad = tmp_path / "broken_policy.rego"
    bad.write_text(source)
    result = run_stand_in(POLICIES / "authz.rego", bad)
    assert result.returncode == 2
    assert "broken_policy.rego" in result.stderr
    assert "listening on" not in result.stdout


def test_stand_in_refuses_missing_path_and_conflicting_data(tmp_path: Path) -> None:
    assert run_stand_in(tmp_path / "nowhere.rego").returncode == 2
    (tmp_path / "one.json").write_text('{"x": 1}')
    (tmp_path / "two.json").write_text('{"x": 2}')
    result = run_stand_in(tmp_path / "one.json", tmp_path / "two.json")
    assert result.returncode == 2
    assert "two.json" in result.stderr


def test_start_failure_reports_the_server_log(tmp_path: Path) -> None:
    bad = tmp_path / "broken_policy.rego"
    bad.write_text("package bad\n\nallow { true }\n")
    with pytest.raises(OpaStartError, match=r"broken_policy\.rego"):
        start_opa([bad])


def test_oversize_check_needs_no_body(opa: OpaProcess) -> None:
    """The refusal comes from the headers alone: the client never sends the 256 MiB."""
    host, port = opa.url.removeprefix("http://").rsplit(":", 1) if opa.url.startswith("http://") else ("", "")
    if not port:
        pytest.skip("TCP only")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/data/x HTTP/1.1\r\nHost: x\r\nContent-Length: 268435457\r\n\r\n{}")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"request body too large" in answer
