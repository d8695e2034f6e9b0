"""Listening sockets that only this process group can serve.

No socket here sets SO_REUSEPORT: with it, any process of the same user could
bind the same address beside the sidecar and receive a share of its
connections. A port that is taken stops the start instead. With --workers the
parent binds each address once and the workers inherit the socket, so they
share one accept queue.

A unix socket file gets its mode as bind() creates it (--unix-socket-mode,
0660 by default): connecting needs write permission on the file, so only its
owner and its group can reach the listener, from the first instant it exists.
A --workers parent binds unix sockets too (bind_exclusive), the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import stat
from collections.abc import Callable, Iterator

from sidecar.config import ListenAddress

# Connections the kernel queues for a listener before it drops new SYNs (it
# caps this at net.core.somaxconn). A dropped SYN is retried after a second,
# far past Envoy's connect timeout, so a burst of connects from one client
# while the loop is busy would fail Envoy's next new connection: an error,
# which a fail-open Envoy lets through. The event loop's default is 100.
BACKLOG = 4096


class ListenError(Exception):
    """An address cannot be bound (taken, not local, not permitted)."""


def bind_exclusive(flag: str, addr: ListenAddress, unix_socket_mode: int = 0o660) -> socket.socket:
    """A listening socket on ``addr``, or ListenError naming the flag and address.

    A unix socket file is created with ``unix_socket_mode``, and replaces a socket
    file already at the path, as gRPC and the event loop do when a single process
    binds it: a file that is no socket stops the start.
    """
    if addr.unix_path is not None:
        return _bind_unix(flag, addr.unix_path, unix_socket_mode)
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Only lets a restart bind while old connections sit in TIME_WAIT;
        # on Linux it never admits a second listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {flag} {addr}: {exc.strerror}") from None
    return sock


def _bind_unix(flag: str, path: str, mode: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.remove(path)  # left by a process that ended, or taken over as a single process would
        with created_with_mode(mode):
            sock.bind(path)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)  # a path too long for AF_UNIX has no errno
        raise ListenError(f"cannot listen on {flag} unix://{path}: {reason}") from None
    return sock


def unix_socket_file(sock: socket.socket) -> tuple[str, int, int] | None:
    """(path, device, inode) of the file a listening unix socket created, to remove
    that file, and not one created at the same path since, when the socket closes."""
    if sock.family != socket.AF_UNIX:
        return None
    path = sock.getsockname()
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    try:
        info = os.stat(path)
    except OSError:  # removed already: nothing of ours to remove later
        return None
    return path, info.st_dev, info.st_ino


def remove_unix_socket_file(created: tuple[str, int, int]) -> None:
    path, device, inode = created
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == (device, inode):
            os.remove(path)


def refuse_queued(sock: socket.socket) -> int:
    """Close the connections waiting in a unix listener's queue after shutdown(SHUT_RD).

    On a TCP listener that shutdown also resets the connections not yet accepted;
    on a unix one it only refuses new ones, and those already queued would wait
    for an answer until the listener closes. Returns how many were closed.
    """
    closed = 0
    sock.setblocking(False)  # the workers made the shared file description non-blocking already
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:  # empty (BlockingIOError), or no longer listening
            return closed
        conn.close()
        closed += 1


async def serve_inherited(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol], sock: socket.socket
) -> asyncio.Server:
    """Serve connections from a socket bound elsewhere (a --workers parent's).

    The loop listens on it again, with its default queue (100) unless told
    otherwise; a unix socket takes the call meant for it (uvloop accepts one in
    create_server too), its file already created with its mode.
    """
    if sock.family == socket.AF_UNIX:
        return await loop.create_unix_server(factory, sock=sock, backlog=BACKLOG)
    return await loop.create_server(factory, sock=sock, backlog=BACKLOG)


@contextlib.contextmanager
def created_with_mode(mode: int) -> Iterator[None]:
    """A unix socket file bind() creates inside gets exactly ``mode`` (a umask of its complement).

    Set around that bind(): a chmod after it would
    leave a moment in which anyone may connect. The umask is the process's, so a
    file another thread creates meanwhile gets no more than ``mode`` either; the
    listeners are bound at start, before checks are served.
    """
    previous = os.umask(0o777 & ~mode)
    try:
        yield
    finally:
        os.umask(previous)


def stop_accepting(addr: ListenAddress) -> int:
    """Stop every listening socket of this process bound to ``addr``; return how many.

    For a listener a library owns (gRPC's): shutting it down refuses new
    connections at once, keeps the connections already accepted, and keeps the
    address bound until the process closes it, so nobody else takes it
    meanwhile.
    """
    stopped = 0
    for name in os.listdir("/proc/self/fd"):
        sock = _socket_at(int(name))
        if sock is None:
            continue
        with sock, contextlib.suppress(OSError):
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) and _bound_to(sock, addr):
                sock.shutdown(socket.SHUT_RD)
                stopped += 1
    return stopped


def _socket_at(fd: int) -> socket.socket | None:
    """A socket object on a duplicate of ``fd``, or None when it is no socket (or gone)."""
    try:
        copy = os.dup(fd)
    except OSError:
        return None
    try:
        return socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        return None


def _bound_to(sock: socket.socket, addr: ListenAddress) -> bool:
    name = sock.getsockname()
    if addr.unix_path is not None:
        # gRPC binds "unix:///path" as "///path": the same file.
        return (
            sock.family == socket.AF_UNIX
            and isinstance(name, str)
            and _rooted(name) == _rooted(addr.unix_path)
        )
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    return bool(name[1] == addr.port and _same_host(name[0], addr.host))


def _rooted(path: str) -> str:
    return "/" + path.lstrip("/") if path.startswith("/") else path


def _same_host(bound: str, wanted: str) -> bool:
    """gRPC may bind an IPv4 address on an IPv6 socket, as ``::ffff:a.b.c.d``, and
    the IPv4 wildcard as the dual-stack ``::``."""
    try:
        have, want = _unmapped(bound), _unmapped(wanted)
    except ValueError:
        return False
    return have == want or (have.is_unspecified and want.is_unspecified)


def _unmapped(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
