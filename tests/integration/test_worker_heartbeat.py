"""A worker has sent its first heartbeat by the time it says it serves.

The --workers parent allows a worker that has never sent a heartbeat a long
time to start (imports, TLS material, binding), and one that has sent any the
heartbeat timeout. A worker that said it serves and then stopped before its
first heartbeat was left stuck for the longer time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from sidecar.worker_link import FDS_ENV, encode_fds
from tests.fault_opa import FaultOpa
from tests.fixtures.sidecar import running_sidecar

SERVING = "serving ext_authz v3 on"


class BeatsAtServing(logging.Handler):
    """What the heartbeat pipe holds when the serving line is logged."""

    def __init__(self, read_end: int) -> None:
        super().__init__()
        self._read_end = read_end
        self.seen: list[bytes] = []

    def emit(self, record: logging.LogRecord) -> None:
        if SERVING in record.getMessage():
            try:
                self.seen.append(os.read(self._read_end, 64))
            except BlockingIOError:
                self.seen.append(b"")


@pytest.fixture
def heartbeat_pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    monkeypatch.setenv(FDS_ENV, encode_fds({}, write_end))
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


async def test_the_first_heartbeat_comes_before_the_serving_line(
    fault_opa: FaultOpa, heartbeat_pipe: tuple[int, int]
) -> None:
    read_end, _ = heartbeat_pipe
    handler = BeatsAtServing(read_end)
    logger = logging.getLogger("sidecar")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with running_sidecar(fault_opa.url):
            pass
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert handler.seen == [b"."]
