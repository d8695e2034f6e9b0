"""No byte of a refused request reaches any log line, whoever writes it.

A real process at --log-level debug, so that aiohttp's and asyncio's own
loggers are as talkative as they get; every request carries a secret in the
part the parser chokes on or near, and the secret must appear nowhere in
stdout or stderr while every request still gets a recorded 4xx deny.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_opa import Behaviour, FaultOpa
from tests.hostile.raw_http import connect, exchange, read_answer
from tests.operations.sidecar_process import SidecarProcess

SECRET = "s3cr3t-TOKEN-4f9b2e"


def _requests() -> dict[str, bytes]:
    bearer = f"authorization: Bearer {SECRET}"
    return {
        "over-long header": f"GET /ext_authz/x HTTP/1.1\r\nhost: a\r\n{bearer}{'x' * 70000}\r\n\r\n".encode(),
        "bad request line": f"GET /ext_authz/{SECRET} HTTP/1.1 junk\r\nhost: a\r\n\r\n".encode(),
        "control character": f"GET /ext_authz/x HTTP/1.1\r\nhost: a\r\n{bearer}\x01\r\n\r\n".encode(),
        "bad chunked body": (
            f"POST /ext_authz/x HTTP/1.1\r\nhost: a\r\n{bearer}\r\ntransfer-encoding: chunked\r\n\r\n"
            f"{SECRET}\r\n{SECRET}\r\n0\r\n\r\n"
        ).encode(),
        "chunk size overflow": (
            f"POST /v1/check HTTP/1.1\r\nhost: a\r\n{bearer}\r\ntransfer-encoding: chunked\r\n\r\n"
            f"ffffffffffffffffffff\r\n{SECRET}\r\n"
        ).encode(),
        "body over limit": (
            f"POST /v1/check HTTP/1.1\r\nhost: a\r\n{bearer}\r\ncontent-length: 999999\r\n\r\n{SECRET}"
        ).encode(),
        "not json": (
            f"POST /v1/check HTTP/1.1\r\nhost: a\r\ncontent-length: {len(SECRET) + 2}\r\n\r\n{{{SECRET}}}"
        ).encode(),
        "too many headers": (
            "GET /ext_authz/x HTTP/1.1\r\nhost: a\r\n"
            + "".join(f"x-{i}: {SECRET}\r\n" for i in range(300))
            + "\r\n"
        ).encode(),
        "bad method": f"{SECRET} /ext_authz/x HTTP/1.1\r\nhost: a\r\n\r\n".encode(),
        "tls to plaintext": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + SECRET.encode(),
    }


@pytest.fixture
def sidecar(fault_opa: FaultOpa, tmp_path: Path) -> Iterator[SidecarProcess]:
    fault_opa.set(Behaviour.json({"result": False}))
    child = SidecarProcess.start(tmp_path, fault_opa.url, "--log-level", "debug", "--log-input")
    try:
        yield child
    finally:
        child.kill()


def test_no_part_of_a_refused_request_is_logged(sidecar: SidecarProcess) -> None:
    target = ("127.0.0.1", sidecar.http_port)
    statuses = {name: exchange(target, data) for name, data in _requests().items()}
    with connect(target) as sock:  # a half-sent request cut off by the header timeout
        sock.sendall(f"GET /ext_authz/x HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {SECRET}".encode())
        statuses["slow header"] = read_answer(sock, timeout=10)
    with connect(target) as sock:  # and a client that hangs up halfway
        sock.sendall(f"POST /v1/check HTTP/1.1\r\nhost: a\r\ncontent-length: 99\r\n\r\n{{{SECRET}".encode())
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait(15) == 0

    output = sidecar.stdout() + sidecar.stderr()
    assert SECRET not in output
    assert SECRET[:8] not in output
    # and each was still answered with a deny that is in the decision log
    logged = {d["decision_id"]: d for d in sidecar.decisions()}
    for name, answer in statuses.items():
        if name == "tls to plaintext" and answer.status == 0:
            continue
        assert 400 <= answer.status < 500, name
        decision = logged[answer.headers["x-opa-sidecar-decision-id"]]
        assert decision["outcome"] == "deny", name
    assert "DEBUG" in sidecar.stderr()  # the level was really debug
