"""--workers: a worker takes gRPC connections from the listening socket its parent
bound and relays each, byte for byte, to its own gRPC server on a private
unix socket in a private directory.

gRPC can only serve a socket it bound itself, and sharing a bound port between
processes would need SO_REUSEPORT, which any process of the same user can join.
Accepting from one shared queue on this event loop also means a worker whose
loop is stuck (or stopped) takes no new connection: the others do. TLS, when
configured, passes through untouched and ends at the gRPC server.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import socket
import tempfile
from typing import cast

from sidecar.listen_sockets import serve_inherited

log = logging.getLogger("sidecar.relay")


def private_grpc_address() -> tuple[str, str]:
    """(gRPC's address, the socket path to connect to) of a fresh unix socket in a
    directory only this user can enter (0700). Not an abstract socket: those are
    listed in /proc/net/unix to every process in the network namespace and take
    no file mode, so anyone could reach the worker's gRPC server directly."""
    directory = tempfile.mkdtemp(prefix="opa-sidecar-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = os.path.join(directory, "grpc.sock")
    return f"unix://{path}", path


class _Half(asyncio.Protocol):
    """One side of a relayed connection; writes what it reads to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self._early: list[bytes] = []  # read before the peer was linked

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self._early.append(data)

    def linked(self, peer: _Half) -> None:
        self.peer = peer
        assert peer.transport is not None
        for data in self._early:
            peer.transport.write(data)
        self._early.clear()

    def eof_received(self) -> bool:
        peer = self.peer.transport if self.peer is not None else None
        if peer is not None and peer.can_write_eof():
            peer.write_eof()
        return True  # keep the other direction open until its side ends too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()  # after writing what is still buffered

    # Backpressure: a slow reader on one side pauses reading on the other.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class GrpcRelay:
    def __init__(self, listening: socket.socket, grpc_socket_name: str) -> None:
        self._listening = listening
        self._grpc_socket_name = grpc_socket_name
        self._server: asyncio.AbstractServer | None = None
        self._linking: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await serve_inherited(asyncio.get_running_loop(), self._accepted, self._listening)

    def stop_accepting(self) -> None:
        """Take no new connection from the shared queue (the other workers still
        do); relayed connections stay open."""
        if self._server is not None:
            self._server.close()

    def _accepted(self) -> _Half:
        return _Link(self)

    async def link(self, inbound: _Half) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # Connected here, then handed to the loop as a connected socket.
            await loop.sock_connect(sock, self._grpc_socket_name)
            _, outbound = await loop.create_unix_connection(_Half, sock=sock)
        except OSError as exc:
            sock.close()
            log.error("gRPC server of this worker unreachable: %s", exc.strerror)
            if inbound.transport is not None:
                inbound.transport.abort()
            return
        inbound.linked(outbound)
        outbound.linked(inbound)
        assert inbound.transport is not None and outbound.transport is not None
        # Either side may have ended while the other was being connected.
        if inbound.transport.is_closing() or outbound.transport.is_closing():
            inbound.transport.close()
            outbound.transport.close()
            return
        inbound.transport.resume_reading()

    def track(self, task: asyncio.Task[None]) -> None:
        self._linking.add(task)
        task.add_done_callback(self._linking.discard)


class _Link(_Half):
    """The accepted side: reads nothing until the gRPC side is connected."""

    def __init__(self, relay: GrpcRelay) -> None:
        super().__init__()
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self._relay.track(asyncio.get_running_loop().create_task(self._relay.link(self)))
