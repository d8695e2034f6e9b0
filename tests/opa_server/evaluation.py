"""Evaluating `data` references on the embedded engine, with OPA-shaped errors."""

from __future__ import annotations

import json
import re
from typing import Any, Final
from urllib.parse import unquote

from opa_bindings import OpaEngine, OpaError

Ref = tuple[str | int, ...]

_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ERRORS_HEADER: Final = re.compile(r"^\d+ errors? occurred:\s*")
# One engine error: "<location>: <code>: <text>", text possibly spanning tab-indented lines.
_ERROR_START: Final = re.compile(r"^(?P<loc>\S[^\n]*?): (?P<code>(?:eval|rego)_[a-z_]+): ", re.MULTILINE)
_FILE_ROW: Final = re.compile(r"(?P<file>.+):(?P<row>\d+)")


class BadPath(Exception):
    """A URL path that does not name a document."""


class EvaluationFailed(Exception):
    """An evaluation that ended in an OPA error response."""

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors


def parse_data_path(raw_path: str) -> Ref:
    """URL path below `/v1/data` -> reference: segments unescaped, integers become numbers."""
    ref: list[str | int] = []
    for segment in raw_path.split("/"):
        if not segment:
            continue
        key = unquote(segment)
        if '"' in key:
            raise BadPath(f"invalid ref term '{key}'")
        if _INTEGER.fullmatch(key) and -(2**63) <= int(key) < 2**63:  # Go's strconv.Atoi
            ref.append(int(key))
        else:
            ref.append(key)
    return tuple(ref)


def ref_string(ref: Ref) -> str:
    """Rego's display form: data.a.b["x-y"][0]."""
    parts = ["data"]
    for key in ref:
        if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key, ensure_ascii=False)}]")
    return "".join(parts)


def _query(ref: Ref) -> str:
    # Bracket form for every key: json.dumps yields a valid Rego string or number literal.
    return "__r = data" + "".join(f"[{json.dumps(key, ensure_ascii=False)}]" for key in ref)


def _location(text: str) -> dict[str, Any] | None:
    match = _FILE_ROW.fullmatch(text)
    if match is None:
        return None  # the location is a snippet of query text: no file or row to report
    file, row = match["file"], int(match["row"])
    if file.isdigit():  # "row:col" of an ad-hoc query
        return {"file": "", "row": int(file), "col": row}
    # The engine reports no column; rule heads start in column 1.
    return {"file": file, "row": row, "col": 1}


def parse_engine_errors(message: str) -> list[dict[str, Any]]:
    """Engine text such as `p.rego:5: eval_conflict_error: ...` -> OPA error objects."""
    text = _ERRORS_HEADER.sub("", message.strip())
    starts = list(_ERROR_START.finditer(text))
    errors: list[dict[str, Any]] = []
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        error: dict[str, Any] = {"code": start["code"], "message": text[start.end() : end].rstrip()}
        location = _location(start["loc"])
        if location is not None:
            error["location"] = location
        errors.append(error)
    return errors


class Evaluator:
    """Evaluates on one engine. Not thread-safe: `has_rules` reads the engine's last trace."""

    def __init__(self, engine: OpaEngine) -> None:
        self.engine = engine

    def document(self, ref: Ref, input_doc: Any) -> tuple[bool, Any]:
        """(defined, value) of `data.<ref>`; `input_doc` None means no input."""
        try:
            rows = self.engine.eval_query(_query(ref), input_doc)
        except OpaError as exc:
            raise _failure(exc) from None
        if not rows:
            return False, None
        return True, rows[0]["__r"]

    def has_rules(self, ref: Ref, input_doc: Any) -> bool:
        """Whether rules produce `data.<ref>` (OPA: "document undefined", not "document missing").

        The engine's trace shows an `Index` step only when it looks up rules for the reference.
        """
        try:
            self.engine.eval_query(_query(ref), input_doc, trace=True)
        except OpaError:
            return True
        return any(event.get("op") == "Index" for event in self.engine.last_trace or ())

    def healthy(self) -> bool:
        try:
            return bool(self.engine.eval_query("__r = true"))
        except OpaError:
            return False


def _failure(exc: OpaError) -> EvaluationFailed:
    if exc.code == "eval_error":
        errors = parse_engine_errors(exc.message)
        return EvaluationFailed(500, "internal_error", "error(s) occurred while evaluating query", errors)
    if exc.code == "prepare_error":
        errors = parse_engine_errors(exc.message)
        return EvaluationFailed(400, "invalid_parameter", "error(s) occurred while compiling query", errors)
    return EvaluationFailed(500, "internal_error", f"{exc.code}: {exc.message}", [])
