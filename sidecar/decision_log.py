"""One JSON line per check: what was decided, why, how fast, about what.

By default the request's query string, headers and body are never written:
they are where tokens travel. With ``--log-input`` the input document is
added after masking (see sidecar/masking.py). Lines are written off the event
loop from a bounded backlog (see sidecar/log_writer.py).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import orjson

from sidecar.authorizer import Outcome
from sidecar.log_writer import LineWriter
from sidecar.masking import Masker
from sidecar.shadow import ShadowResult
from sidecar.verdict import Allow, Deny, Verdict


def _outcome(verdict: Verdict) -> str:
    return "allow" if isinstance(verdict, Allow) else "deny"


_second = -1
_second_text = ""


def _timestamp() -> str:
    """UTC to the millisecond; the date and time part is formatted once a second."""
    global _second, _second_text
    millis = int(time.time() * 1000)
    second, fraction = divmod(millis, 1000)
    if second != _second:
        _second, _second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second_text}.{fraction:03d}Z"


DEFAULT_BACKLOG_BYTES = 4 << 20
# How long closing waits for the backlog to reach a slow destination.
_CLOSE_SECONDS = 2.0


class DecisionLog:
    def __init__(
        self,
        decision_path: str,
        stream: IO[bytes] | None = None,
        *,
        masker: Masker | None = None,
        max_backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> None:
        self._decision_path = decision_path
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._writer = LineWriter(self._stream, max_backlog_bytes)
        self._masker = masker  # set only with --log-input
        self.shadow_decision_path = ""

    @classmethod
    def open(
        cls,
        destination: str,
        decision_path: str,
        masker: Masker | None = None,
        max_backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> DecisionLog:
        """``-`` for stdout, else append to a file."""
        stream = sys.stdout.buffer if destination == "-" else open(destination, "ab")  # noqa: SIM115
        return cls(decision_path, stream, masker=masker, max_backlog_bytes=max_backlog_bytes)

    def record(
        self, decision_id: str, outcome: Outcome, latency_s: float, trace: tuple[str, str] | None = None
    ) -> None:
        """``trace``: the check's trace_id and span_id, to join the line to its trace."""
        verdict = outcome.verdict
        entry: dict[str, Any] = {
            "time": _timestamp(),
            "decision_id": decision_id,
            "outcome": "allow" if isinstance(verdict, Allow) else "deny",
        }
        if trace is not None:
            entry["trace_id"], entry["span_id"] = trace
        if not isinstance(verdict, Allow):
            entry["reason"] = verdict.reason.value
            entry["detail"] = verdict.detail
            entry["http_status"] = verdict.http_status
        entry["latency_ms"] = round(latency_s * 1000, 3)
        entry["decision_path"] = self._decision_path
        if verdict.opa_decision_id:
            entry["opa_decision_id"] = verdict.opa_decision_id
        request = outcome.request
        if request is not None:
            http = request.attributes.request.http
            entry["method"] = http.method
            entry["host"] = http.host
            entry["path"] = http.path.partition("?")[0]
            if request.attributes.source.principal:
                entry["source_principal"] = request.attributes.source.principal
        after = outcome.after_deny
        if after is not None and after.kind is not None:  # the caller was denied within the window
            entry["after_deny"] = after.kind.value
            entry["seconds_since_deny"] = round(after.seconds_since_deny, 3)
            entry["earlier_decision_id"] = after.earlier_decision_id
        if self._masker is not None and outcome.input is not None:
            entry["input"] = self._masker.mask(outcome.input)
        # Raises LineNotRecorded when the line cannot be kept: the check is then denied.
        self._writer.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def record_shadow(self, decision_id: str, enforced: Verdict, shadow: ShadowResult) -> None:
        """A second line for the same decision id: what the candidate policy
        said, and whether it agrees with what was enforced."""
        entry: dict[str, Any] = {
            "time": _timestamp(),
            "decision_id": decision_id,
            "shadow_decision_path": self.shadow_decision_path,
            "enforced": _outcome(enforced),
            "shadow": _outcome(shadow.verdict),
            "agrees": _outcome(enforced) == _outcome(shadow.verdict),
            "shadow_latency_ms": round(shadow.seconds * 1000, 3),
        }
        if isinstance(shadow.verdict, Deny):
            entry["shadow_reason"] = shadow.verdict.reason.value
        self._writer.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line taken so far is written (tests, shutdown)."""
        return self._writer.flush(timeout)

    @property
    def backlog_bytes(self) -> int:
        return self._writer.backlog_bytes

    def close(self) -> None:
        self._writer.close(_CLOSE_SECONDS)
        if self._stream is not sys.stdout.buffer:
            self._stream.close()
