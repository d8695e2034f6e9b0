"""The unix sockets the sidecar listens on admit their owner and group alone.

Connecting to a unix socket needs write permission on its file, so the mode the
file gets at bind() decides who can ask the sidecar anything. The Kubernetes pod
puts the sockets in a volume whose group (fsGroup) Envoy shares; these tests set
up the same: a setgid directory of a shared group, a member of it and a stranger.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.config import ListenAddress, parse_file_mode
from tests.fixtures.sidecar import running_sidecar

NOBODY = 65534  # the user and group a stranger in the same network namespace runs as
SHARED_GROUP = 10001  # the pod's fsGroup
OPA_URL = "http://127.0.0.1:9"  # never asked: the tests only connect


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: AF_UNIX paths are limited to about 107 bytes. As kubelet leaves an
    # fsGroup volume: group-owned, setgid (files created inside take its group),
    # and open to anyone's lookups, so only the socket's own mode keeps strangers out.
    path = Path(tempfile.mkdtemp(prefix="sm-"))
    if os.geteuid() == 0:
        os.chown(path, -1, SHARED_GROUP)
    path.chmod(0o777 | stat.S_ISGID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The mode must not depend on the umask the process happens to start with."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _listeners(directory: Path) -> dict[str, ListenAddress]:
    return {
        name: ListenAddress(unix_path=str(directory / f"{name}.sock")) for name in ("grpc", "http", "probe")
    }


def _mode(path: str | None) -> int:
    assert path is not None
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode)
    return stat.S_IMODE(info.st_mode)


def _connect_as(path: str | None, uid: int, gid: int, groups: tuple[int, ...] = ()) -> int:
    """The errno a process of that user gets connecting to ``path`` (0: connected)."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        outcome = 255
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
            outcome = 0
        except OSError as exc:
            outcome = exc.errno if exc.errno is not None and exc.errno < 255 else 255
        finally:
            os._exit(outcome)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


async def test_every_unix_socket_is_0660_by_default(socket_dir: Path, permissive_umask: None) -> None:
    addresses = _listeners(socket_dir)
    async with running_sidecar(
        OPA_URL, grpc_addr=addresses["grpc"], http_addr=addresses["http"], probe_addr=addresses["probe"]
    ):
        modes = {name: _mode(addr.unix_path) for name, addr in addresses.items()}
        umask_after_start = os.umask(0)
    assert modes == {"grpc": 0o660, "http": 0o660, "probe": 0o660}
    assert umask_after_start == 0  # restored: only the binds ran under the socket's mode


async def test_the_mode_flag_chooses_it(socket_dir: Path, permissive_umask: None) -> None:
    addresses = _listeners(socket_dir)
    async with running_sidecar(
        OPA_URL,
        grpc_addr=addresses["grpc"],
        http_addr=addresses["http"],
        probe_addr=addresses["probe"],
        unix_socket_mode=0o600,
    ):
        modes = {name: _mode(addr.unix_path) for name, addr in addresses.items()}
    assert modes == {"grpc": 0o600, "http": 0o600, "probe": 0o600}


@pytest.mark.parametrize("bad", ["0999", "rw-rw----", "1660", "", "0x1b0"])
def test_a_bad_mode_stops_the_start_naming_the_flag(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--opa-url", OPA_URL, "--unix-socket-mode", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("opa-sidecar: invalid --unix-socket-mode")


@pytest.mark.parametrize(("raw", "mode"), [("660", 0o660), ("0600", 0o600), ("0o666", 0o666)])
def test_octal_spellings(raw: str, mode: int) -> None:
    assert parse_file_mode(raw) == mode


async def test_another_user_cannot_connect_and_the_shared_group_can(
    socket_dir: Path, permissive_umask: None
) -> None:
    if os.geteuid() != 0:
        pytest.skip("running a process as another user needs root; CI runs the suite as root")
    addresses = _listeners(socket_dir)
    async with running_sidecar(
        OPA_URL, grpc_addr=addresses["grpc"], http_addr=addresses["http"], probe_addr=addresses["probe"]
    ):
        outcomes = {
            (name, who): _connect_as(addr.unix_path, NOBODY, NOBODY, groups)
            for name, addr in addresses.items()
            for who, groups in (("stranger", ()), ("member", (SHARED_GROUP,)))
        }
        groups = {name: os.stat(str(addr.unix_path)).st_gid for name, addr in addresses.items()}
    assert groups == dict.fromkeys(addresses, SHARED_GROUP)
    for name in addresses:
        assert outcomes[name, "stranger"] == errno.EACCES, name
        assert outcomes[name, "member"] == 0, name
