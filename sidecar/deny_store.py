"""The shared deny memory: a Redis-protocol server (Redis, Valkey) that every
worker and replica reads and writes, so a deny seen by one holds on all.

Two keys per remembered deny, each expiring with its window (the server's
clock ends it): the caller's latest deny with the credential it presented, and
the deny of that caller's action. A check reads both in one round trip. Every
call has a deadline; a server that does not answer in time, answers with an
error or holds a value this sidecar did not write raises StoreUnavailable,
never "nothing remembered".
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sidecar.deny_table import EarlierDeny, Recollection, Subject

KEY_PREFIX = b"opa-sidecar:deny:"
# Connections kept open to the store; a check waiting for one still ends at its deadline.
MAX_CONNECTIONS = 64
# A bound for the socket itself; each call's own deadline is usually far shorter.
_SOCKET_SECONDS = 1.0
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store did not give a usable answer in time. The message names the
    failure by type only: it never quotes the store's URL or a value."""


class RedisDenyStore:
    def __init__(self, url: str) -> None:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,  # the call's deadline bounds the wait
            socket_timeout=_SOCKET_SECONDS,
            socket_connect_timeout=_SOCKET_SECONDS,
            retry=Retry(NoBackoff(), 0),  # one attempt: a retry would outlive the check
        )
        self._redis = Redis(connection_pool=pool)
        self._abandoned: set[asyncio.Future[Any]] = set()

    async def recall(self, subject: Subject, deadline: float) -> Recollection:
        """``deadline`` is in loop time."""
        keys = (_caller_key(subject), _action_key(subject))
        try:
            caller, action = await self._by(deadline, self._redis.mget(keys))
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable(f"read failed: {type(exc).__name__}") from None
        return Recollection(_decode(caller, with_credential=True), _decode(action, with_credential=False))

    async def remember(
        self, subject: Subject, decision_id: str, denied_at: float, window: float, deadline: float
    ) -> None:
        millis = max(math.ceil(window * 1000), 1)
        stamp = f"{decision_id}|{denied_at!r}".encode()
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(_caller_key(subject), stamp + b"|" + subject.credential.hex().encode(), px=millis)
        pipe.set(_action_key(subject), stamp, px=millis)
        try:
            await self._by(deadline, pipe.execute())
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreUnavailable(f"write failed: {type(exc).__name__}") from None

    async def close(self) -> None:
        for call in list(self._abandoned):
            call.cancel()
        await self._redis.aclose()

    async def _by(self, deadline: float, call: Awaitable[T]) -> T:
        """The call's result, or TimeoutError at the deadline. The call is left
        to end in the background: the client closes the connection of a call
        it abandons, and against a paused server that close waits itself."""
        task = asyncio.ensure_future(call)
        done, _ = await asyncio.wait({task}, timeout=max(deadline - asyncio.get_running_loop().time(), 0))
        if task in done:
            return task.result()
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(_forget(self._abandoned))
        raise TimeoutError


def _caller_key(subject: Subject) -> bytes:
    return KEY_PREFIX + b"c:" + subject.caller.hex().encode()


def _action_key(subject: Subject) -> bytes:
    return KEY_PREFIX + b"a:" + subject.action_key.hex().encode()


def _decode(value: object, *, with_credential: bool) -> EarlierDeny | None:
    """A stored deny, or None when the key is absent. Anything else at the key
    is a store this sidecar cannot trust to say "nothing remembered"."""
    if value is None:
        return None
    untrusted = StoreUnavailable("the store holds a value this sidecar did not write")
    if not isinstance(value, bytes):
        raise untrusted
    try:
        parts = value.decode("ascii").split("|")
        if len(parts) != (3 if with_credential else 2):
            raise ValueError("wrong number of fields")
        denied_at = float(parts[1])
        credential = bytes.fromhex(parts[2]) if with_credential else b""
        if not math.isfinite(denied_at) or not parts[0]:
            raise ValueError("not a deny")
    except (UnicodeDecodeError, ValueError):
        raise untrusted from None
    return EarlierDeny(parts[0], denied_at, credential)


def _forget(abandoned: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned call's failure is already a deny

    return done
