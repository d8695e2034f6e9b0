"""Unix domain sockets on both sides: gRPC client -> sidecar (--grpc-addr unix://)
and sidecar -> OPA (--opa-url unix://), over a real gRPC channel and real HTTP."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from sidecar.config import ListenAddress
from sidecar.envoy.response import PERMISSION_DENIED
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa, RecordedRequest
from tests.fixtures.opa import DEMO_DATA, REGO_DIR, OpaFactory
from tests.fixtures.sidecar import running_sidecar


def _allow_path_ok(request: RecordedRequest) -> Behaviour:
    if request.method != "POST":
        return Behaviour.json({})  # GET /health
    return Behaviour.json(
        {"result": request.json()["input"]["attributes"]["request"]["http"]["path"] == "/ok"}
    )


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: AF_UNIX paths are limited to about 107 bytes, pytest's tmp_path may be longer.
    path = Path(tempfile.mkdtemp(prefix="sc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _check(grpc_sock: Path, request: CheckRequest) -> CheckResponse:
    async with grpc.aio.insecure_channel(f"unix://{grpc_sock}") as channel:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        response: CheckResponse = await stub.Check(request, timeout=3.0)
        return response


async def test_fault_opa_over_unix_sockets_allow_and_deny(fault_opa_unix: FaultOpa, socket_dir: Path) -> None:
    grpc_sock, probe_sock = socket_dir / "authz.sock", socket_dir / "probe.sock"
    fault_opa_unix.set(_allow_path_ok)
    async with running_sidecar(
        fault_opa_unix.url,
        grpc_addr=ListenAddress(unix_path=str(grpc_sock)),
        http_addr=ListenAddress(unix_path=str(socket_dir / "http.sock")),
        probe_addr=ListenAddress(unix_path=str(probe_sock)),
        ready_without_opa=False,
    ) as sidecar:
        assert sidecar.sidecar.grpc_target == f"unix://{grpc_sock}"
        allowed = await _check(grpc_sock, check_request("GET", "/ok"))
        denied = await _check(grpc_sock, check_request("GET", "/no"))
        async with (
            aiohttp.UnixConnector(path=str(probe_sock)) as connector,
            aiohttp.ClientSession(connector=connector) as http,
            http.get("http://localhost/readyz") as ready,
        ):
            assert ready.status == 200  # the /health probe went over OPA's socket too
        decisions = sidecar.decisions()
    assert allowed.status.code == 0
    assert denied.status.code == PERMISSION_DENIED
    assert [d["outcome"] for d in decisions] == ["allow", "deny"]
    assert decisions[1]["reason"] == "policy_denied"
    posts = [r for r in fault_opa_unix.requests if r.method == "POST"]
    assert [r.path for r in posts] == ["/v1/data/envoy/authz/allow"] * 2
    assert all(r.header("Host") == "localhost" for r in posts)


async def test_real_policy_over_unix_sockets(opa_server_factory: OpaFactory, socket_dir: Path) -> None:
    opa = opa_server_factory([REGO_DIR, DEMO_DATA], unix_socket=True)
    assert opa.url.startswith("unix://")
    grpc_sock = socket_dir / "authz.sock"
    # A generous budget: the first evaluations of a fresh engine can be slow on a busy machine.
    unix_grpc = ListenAddress(unix_path=str(grpc_sock))
    async with running_sidecar(opa.url, grpc_addr=unix_grpc, opa_timeout=5.0) as sidecar:
        public = await _check(grpc_sock, check_request("GET", "/public/docs"))
        private = await _check(grpc_sock, check_request("GET", "/api/me"))
        decisions = sidecar.decisions()
    assert public.status.code == 0
    assert private.status.code != 0
    assert private.denied_response.status.code == 401  # the policy's own answer: no token
    assert [d["outcome"] for d in decisions] == ["allow", "deny"]
    assert decisions[1]["reason"] == "policy_denied"
