"""Listening sockets that only this process group can serve.

No socket here sets SO_REUSEPORT: with it, any process of the same user could
bind the same address beside the sidecar and receive a share of its
connections. A port that is taken stops the start instead. With --workers the
parent binds each address once and the workers inherit the socket, so they
share one accept queue.

A unix socket file gets its mode as bind() creates it (--unix-socket-mode,
0660 by default): connecting needs write permission on the file, so only its
owner and its group can reach the listener, from the first instant it exists.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator

from sidecar.config import ListenAddress

BACKLOG = 1024


class ListenError(Exception):
    """An address cannot be bound (taken, not local, not permitted)."""


def bind_exclusive(flag: str, addr: ListenAddress) -> socket.socket:
    """A listening TCP socket on ``addr``, or ListenError naming the flag and address."""
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
