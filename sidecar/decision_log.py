"""One JSON line per check: what was decided, why, how fast, about what.

The request's query string, headers and body are never written: they are
where tokens travel.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import orjson

from sidecar.authorizer import Outcome
from sidecar.verdict import Allow


class DecisionLog:
    def __init__(self, decision_path: str, stream: IO[bytes] | None = None) -> None:
        self._decision_path = decision_path
        self._stream = stream if stream is not None else sys.stdout.buffer

    def record(self, decision_id: str, outcome: Outcome, latency_s: float) -> None:
        verdict = outcome.verdict
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            + f".{int(time.time() * 1000) % 1000:03d}Z",
            "decision_id": decision_id,
            "outcome": "allow" if isinstance(verdict, Allow) else "deny",
        }
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
        self._stream.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
        self._stream.flush()
