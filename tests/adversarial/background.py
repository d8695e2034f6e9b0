"""The in-process sidecar (tests.fixtures.sidecar.running_sidecar) on an event loop in a
background thread, so a synchronous test (hypothesis drives plain functions) can keep one
sidecar for many examples and talk to it over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from tests.fixtures.sidecar import SidecarHandle, running_sidecar

_START_TIMEOUT = 20.0


class BackgroundSidecar:
    def __init__(self, opa_url: str, **overrides: Any) -> None:
        self._opa_url = opa_url
        self._overrides = overrides
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sidecar-loop", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self._handle: SidecarHandle | None = None

    @property
    def handle(self) -> SidecarHandle:
        assert self._handle is not None, "not started"
        return self._handle

    @property
    def target(self) -> str:
        return self.handle.sidecar.grpc_target

    @property
    def inflight(self) -> int:
        return self.handle.sidecar.authorizer.inflight

    def decisions(self) -> list[dict[str, Any]]:
        return self.handle.decisions()

    def start(self) -> BackgroundSidecar:
        self._thread.start()
        entered = self._stack.enter_async_context(running_sidecar(self._opa_url, **self._overrides))
        self._handle = asyncio.run_coroutine_threadsafe(entered, self._loop).result(_START_TIMEOUT)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stack.aclose(), self._loop).result(_START_TIMEOUT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_START_TIMEOUT)
        self._loop.close()

    def __enter__(self) -> BackgroundSidecar:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
