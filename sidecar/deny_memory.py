"""Deny memory: a denial is binding for a while.

After a deny whose reason is remembered, the same caller's later checks within
the window are marked (``observe``), its retries of the denied action are
denied without asking OPA (``hold``), or all its checks are (``freeze``); in
``hold`` and ``freeze`` a caller that now presents another credential is
denied too. The memory can only add a deny: what it returns is a Deny or
nothing (ask the policy), and a caller it does not find, because the window
ended, the table was full or the caller was never denied, is simply asked
about.

Callers, actions and credentials are kept as keyed hashes (HMAC-SHA256) of
the values at their JSON pointers, never in clear.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sidecar.config import Settings
from sidecar.deny_memory_options import load_key
from sidecar.deny_store import RedisDenyStore, StoreUnavailable
from sidecar.deny_table import DIGEST_BYTES, EarlierDeny, LocalDenyTable, Recollection, Subject
from sidecar.metrics import Metrics
from sidecar.signals import JsonPointer, carries_nothing
from sidecar.verdict import Deny, DenyReason, Verdict

log = logging.getLogger("sidecar.deny_memory")


class Mode(enum.StrEnum):
    OBSERVE = "observe"  # mark, never change a verdict
    HOLD = "hold"  # deny a retry of the denied action, and a credential switch
    FREEZE = "freeze"  # deny every check of the caller, and a credential switch


class AfterDeny(enum.StrEnum):
    """How a check relates to its caller's remembered deny."""

    RETRY = "retry"  # the denied action again, with the same credential
    OTHER_ACTION = "other_action"  # another action, with the same credential
    CREDENTIAL_SWITCH = "credential_switch"  # another credential, whatever the action


@dataclass(frozen=True, slots=True)
class Recall:
    """What the memory says about one check: the deny it makes (None: ask the
    policy) and, when the caller was denied within the window, how this check
    follows that deny."""

    deny: Deny | None
    kind: AfterDeny | None = None
    seconds_since_deny: float = 0.0
    earlier_decision_id: str = ""


class SubjectReader:
    """Reads caller, action and credential from an input document as keyed hashes."""

    def __init__(
        self,
        key: bytes,
        callers: Sequence[JsonPointer],
        actions: Sequence[JsonPointer],
        credentials: Sequence[JsonPointer],
    ) -> None:
        self._key = key
        self._callers = tuple(callers)
        self._actions = tuple(actions)
        self._credentials = tuple(credentials)

    def read(self, document: dict[str, Any], *, attested: bool) -> Subject | None:
        """None when the caller cannot be told: every caller pointer is missing
        or carries nothing. Where the document is not Envoy's (``attested``
        false), a pointer to a fact only Envoy can attest reads as missing, so
        no one can name another caller there."""
        callers = _values(self._callers, document, attested)
        if all(carries_nothing(value) for value in callers):
            return None
        try:
            return Subject(
                self._digest(b"caller", callers),
                self._digest(b"action", _values(self._actions, document, attested)),
                self._digest(b"credential", _values(self._credentials, document, attested)),
            )
        except (TypeError, ValueError):  # not JSON values: the request is refused later as bad
            return None

    def _digest(self, kind: bytes, values: list[Any]) -> bytes:
        try:
            encoded = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # integers beyond 64 bits: the stdlib encoder keeps them exact
            encoded = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, kind + b"\0" + encoded, hashlib.sha256).digest()[:DIGEST_BYTES]


def _values(pointers: Sequence[JsonPointer], document: dict[str, Any], attested: bool) -> list[Any]:
    return [None if not attested and p.envoy_attested else p.resolve(document) for p in pointers]


def judge(mode: Mode, subject: Subject, found: Recollection, now: float) -> Recall | None:
    """The rules: None when the caller has no remembered deny in its window."""
    caller = found.caller
    if caller is None:
        return None
    earlier: EarlierDeny
    if caller.credential != subject.credential:
        kind, earlier = AfterDeny.CREDENTIAL_SWITCH, caller
    elif found.action is not None:
        kind, earlier = AfterDeny.RETRY, found.action
    else:
        kind, earlier = AfterDeny.OTHER_ACTION, caller
    since = max(now - earlier.denied_at, 0.0)
    ago = f"{since:.3f} s ago (decision {earlier.decision_id})"
    deny = None
    if mode is not Mode.OBSERVE:
        if kind is AfterDeny.CREDENTIAL_SWITCH:
            deny = Deny(DenyReason.CREDENTIAL_SWITCH, f"caller denied {ago} now presents another credential")
        elif kind is AfterDeny.RETRY:
            deny = Deny(DenyReason.HELD_AFTER_DENY, f"caller denied this action {ago}")
        elif mode is Mode.FREEZE:
            deny = Deny(DenyReason.HELD_AFTER_DENY, f"caller denied {ago} is frozen")
    return Recall(deny, kind, since, earlier.decision_id)


class DenyMemory:
    def __init__(
        self,
        *,
        window: float,
        mode: Mode,
        reasons: frozenset[DenyReason],
        reader: SubjectReader,
        local: LocalDenyTable,
        metrics: Metrics,
        store: RedisDenyStore | None = None,
        store_timeout: float = 0.02,
        local_on_store_failure: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.mode = mode
        self._reasons = reasons
        self._reader = reader
        self._local = local
        self._metrics = metrics
        self._store = store
        self._store_timeout = store_timeout
        self._local_on_store_failure = local_on_store_failure
        self._clock = clock
        self._writes: set[asyncio.Task[None]] = set()

    def subject(self, document: dict[str, Any], *, attested: bool) -> Subject | None:
        return self._reader.read(document, attested=attested)

    async def recall(self, subject: Subject, deadline: float) -> Recall | None:
        """Before asking the policy. ``deadline`` is in loop time."""
        try:
            found = await self._recollect(subject, deadline)
        except StoreUnavailable as exc:
            self._metrics.observe_deny_store_error("read")
            if self.mode is Mode.OBSERVE:  # observing never changes a verdict
                return None
            detail = f"deny memory store: {exc}"
            return Recall(Deny(DenyReason.DENY_MEMORY_UNAVAILABLE, detail))
        recall = judge(self.mode, subject, found, self._clock())
        if recall is not None and recall.kind is not None:
            self._metrics.observe_after_deny(recall.kind.value, held=recall.deny is not None)
        return recall

    async def remember(self, subject: Subject, verdict: Verdict, decision_id: str, deadline: float) -> None:
        """After the verdict: a deny of a remembered reason opens (or renews)
        the caller's window. The deny is answered whatever becomes of this."""
        if not isinstance(verdict, Deny) or verdict.reason not in self._reasons:
            return
        evicted = self._local.evicted
        self._local.remember(subject, decision_id, self.window)
        self._metrics.observe_deny_remembered(self._local.evicted - evicted)
        if self._store is None:
            return
        # The write gets the store's own timeout even when the check's budget is
        # spent; the answer waits for it only until the check's deadline.
        write = asyncio.ensure_future(self._write(subject, decision_id))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.wait({write}, timeout=remaining)

    async def close(self) -> None:
        for write in list(self._writes):
            write.cancel()
        if self._store is not None:
            await self._store.close()

    async def _recollect(self, subject: Subject, deadline: float) -> Recollection:
        if self._store is None:
            return self._local.recall(subject)
        now = asyncio.get_running_loop().time()
        try:
            if deadline <= now:
                raise StoreUnavailable("no time left in the check's budget")
            return await self._store.recall(subject, min(now + self._store_timeout, deadline))
        except StoreUnavailable:
            if self._local_on_store_failure:
                return self._local.recall(subject)
            raise

    async def _write(self, subject: Subject, decision_id: str) -> None:
        assert self._store is not None
        try:
            deadline = asyncio.get_running_loop().time() + self._store_timeout
            await self._store.remember(subject, decision_id, self._clock(), self.window, deadline)
        except StoreUnavailable as exc:
            self._metrics.observe_deny_store_error("write")
            log.warning("deny not shared through the store: %s", exc)


def build_deny_memory(settings: Settings, metrics: Metrics) -> DenyMemory | None:
    """The memory --deny-memory asks for, or None when it is off."""
    if settings.deny_memory <= 0:
        return None
    path = settings.deny_memory_key_file
    # Without a configured key the hashes mean something in this process only.
    key = load_key(path) if path is not None else secrets.token_bytes(32)
    store = RedisDenyStore(settings.deny_memory_store) if settings.deny_memory_store else None
    return DenyMemory(
        window=settings.deny_memory,
        mode=Mode(settings.deny_memory_mode),
        reasons=settings.deny_memory_reasons,
        reader=SubjectReader(
            key, settings.caller_pointers, settings.action_pointers, settings.credential_pointers
        ),
        local=LocalDenyTable(settings.deny_memory_capacity),
        metrics=metrics,
        store=store,
        store_timeout=settings.deny_memory_store_timeout,
        local_on_store_failure=settings.deny_memory_store_failure == "local",
    )
