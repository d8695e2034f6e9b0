"""A worker's private gRPC socket can be reached by its own user only."""

from __future__ import annotations

import os
import stat

from sidecar.grpc_relay import private_grpc_address


def test_private_address_is_a_socket_path_in_a_directory_only_its_user_enters() -> None:
    target, path = private_grpc_address()
    assert target == f"unix://{path}"
    assert not path.startswith("\0")  # not abstract: those are open to the whole namespace
    mode = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
    assert mode == 0o700
    other_target, _ = private_grpc_address()
    assert other_target != target
