"""The OPA bearer token from --opa-token-file: sent, rotated without a restart,
required at startup, and never written to any log."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from sidecar.envoy.response import PERMISSION_DENIED
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.operations.sidecar_process import (
    REPO_ROOT,
    SidecarProcess,
    child_env,
    free_port,
    serve_command,
)

TOKEN_A = "tokA-7Qp2vX9mZr4LwK"
TOKEN_B = "tokB-c3Nf8Hs1Ye6TjU"
TOKEN_C = "tokC-u5Rk0Db7Wq2GaE"


def _write(path: Path, content: str) -> None:
    path.write_text(content)


def _replace(path: Path, content: str) -> None:
    # How Kubernetes and most secret managers rotate: a new file renamed over the old.
    staged = path.with_name(path.name + ".new")
    staged.write_text(content)
    os.replace(staged, path)


async def _header_after_check(sidecar: SidecarHandle, fault: FaultOpa) -> str | None:
    await sidecar.check(check_request())
    return fault.requests[-1].header("Authorization")


async def _await_header(
    sidecar: SidecarHandle, fault: FaultOpa, expected: str | None, within: float
) -> float:
    """Seconds until checks carry `expected`; fails after `within`."""
    started = time.monotonic()
    while (header := await _header_after_check(sidecar, fault)) != expected:
        elapsed = time.monotonic() - started
        assert elapsed < within, f"still {header!r} after {elapsed:.2f} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_token_is_sent_as_bearer_and_rotates_without_restart(
    fault_opa: FaultOpa, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    _write(token_file, TOKEN_A + "\n")  # a trailing newline, as `echo` writes it
    async with running_sidecar(fault_opa.url, opa_token_file=str(token_file)) as sidecar:
        assert await _header_after_check(sidecar, fault_opa) == f"Bearer {TOKEN_A}"
        _write(token_file, TOKEN_B)  # rewritten in place
        rewrite_s = await _await_header(sidecar, fault_opa, f"Bearer {TOKEN_B}", within=1.6)
        _replace(token_file, TOKEN_C)  # renamed over
        rename_s = await _await_header(sidecar, fault_opa, f"Bearer {TOKEN_C}", within=1.6)
    # The file is looked at no more than once a second, so each change shows within about that.
    assert rewrite_s <= 1.5 and rename_s <= 1.5


async def test_readiness_probe_carries_the_token(fault_opa: FaultOpa, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    _write(token_file, TOKEN_A)
    async with running_sidecar(fault_opa.url, opa_token_file=str(token_file), ready_without_opa=False):
        pass
    [probe] = [r for r in fault_opa.requests if r.path == "/health"]
    assert probe.header("Authorization") == f"Bearer {TOKEN_A}"


async def test_a_broken_rotation_drops_the_old_token_until_the_file_is_good(
    fault_opa: FaultOpa, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A token is often rotated because the old one must stop working: a bad new
    # file means no token at all (an OPA that requires one refuses), never the old one.
    token_file = tmp_path / "token"
    _write(token_file, TOKEN_A)
    caplog.set_level("DEBUG")
    async with running_sidecar(fault_opa.url, opa_token_file=str(token_file)) as sidecar:
        _write(token_file, f"Bearer {TOKEN_B}")  # a common mistake: the scheme in the file
        await _await_header(sidecar, fault_opa, None, within=1.6)
        token_file.unlink()
        await asyncio.sleep(1.1)
        assert await _header_after_check(sidecar, fault_opa) is None
        _write(token_file, TOKEN_C)
        await _await_header(sidecar, fault_opa, f"Bearer {TOKEN_C}", within=1.6)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("--opa-token-file" in w and "no token is sent" in w for w in warnings)
    for secret in (TOKEN_A, TOKEN_B, TOKEN_C):
        assert secret not in caplog.text


def test_missing_unreadable_or_empty_token_file_stops_startup(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases = {
        "missing": (tmp_path / "nonexistent", 2),  # checked with the flags: bad configuration
        "unreadable": (tmp_path, 2),  # a directory: open() fails even for root
        "empty": (empty, 2),  # its content is checked when the OPA client is built: still configuration
    }
    # Run side by side: none of them should get as far as listening.
    started = {
        name: subprocess.Popen(
            serve_command(
                "--opa-url",
                "http://127.0.0.1:9",
                "--opa-token-file",
                str(path),
                "--grpc-addr",
                f"127.0.0.1:{free_port()}",
                "--http-addr",
                f"127.0.0.1:{free_port()}",
                "--probe-addr",
                f"127.0.0.1:{free_port()}",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=child_env(),
        )
        for name, (path, _) in cases.items()
    }
    try:
        for name, process in started.items():
            out, err = process.communicate(timeout=20)
            lines = err.decode().splitlines()
            assert (name, process.returncode) == (name, cases[name][1]), err.decode()
            assert len(lines) == 1 and "--opa-token-file" in lines[0], (name, lines)
            assert out == b""
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait(5)


def test_token_never_appears_in_any_output_even_when_opa_rejects_it(
    fault_opa: FaultOpa, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    _write(token_file, TOKEN_A)

    def unauthorized(request: RecordedRequest) -> Behaviour:
        # A hostile or buggy OPA that echoes the credential back in its error.
        header = request.header("Authorization") or ""
        return Behaviour.json({"code": "unauthorized", "message": f"bad credential {header}"}, status=401)

    fault_opa.set(unauthorized)
    child = SidecarProcess.start(
        tmp_path,
        fault_opa.url,
        "--opa-token-file",
        str(token_file),
        "--log-level",
        "debug",
        "--log-input",
        "--opa-timeout",
        "1",
    )
    try:
        asyncio.run(_checks_around_a_bad_rotation(child.grpc_target, token_file, fault_opa))
    finally:
        child.signal()
        exit_code = child.wait(10)
    assert exit_code == 0
    decisions = child.decisions()
    assert [d["reason"] for d in decisions] == ["opa_http_status"] * 2
    assert decisions[0]["detail"] == "OPA answered HTTP 401 (unauthorized)"
    assert "input" in decisions[0]  # --log-input was on
    output = child.stdout() + child.stderr()
    assert "no token is sent" in output  # the bad rotation was logged...
    for secret in (TOKEN_A, TOKEN_B):  # ...but no token, in whole or in part
        assert secret not in output
        assert secret[5:] not in output


async def _checks_around_a_bad_rotation(target: str, token_file: Path, fault: FaultOpa) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        for sent in (f"Bearer {TOKEN_A}", None):
            response = await stub.Check(check_request(headers={"authorization": "Bearer x"}), timeout=3)
            assert response.status.code == PERMISSION_DENIED
            assert fault.requests[-1].header("Authorization") == sent
            if sent is not None:
                _write(token_file, f"Bearer {TOKEN_B}")  # rejected: no token at all, a warning is logged
                await asyncio.sleep(1.5)
