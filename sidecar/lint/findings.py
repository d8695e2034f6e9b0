"""What the linter reports: severities, rules, and findings.

A checker returns ``Issue``s (a rule, a place inside the document it was
given, a message and a fix); the linter turns each into a ``Finding`` by
adding the file, the document index and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# A place inside a parsed document: mapping keys and list indices, outermost first.
Pointer = tuple[str | int, ...]


class Severity(StrEnum):
    ERROR = "error"  # lets requests through when authorization fails or is skipped
    WARNING = "warning"  # weakens or hides the fail-closed behaviour
    INFO = "info"  # worth knowing; does not fail the lint

    @property
    def fails(self) -> bool:
        return self is not Severity.INFO


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: Severity
    summary: str

    def issue(self, path: Pointer, message: str, fix: str) -> Issue:
        return Issue(self, path, message, fix)


@dataclass(frozen=True, slots=True)
class Issue:
    rule: Rule
    path: Pointer
    message: str
    fix: str


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    document: int  # 0-based index of the YAML document in the file
    path: str  # RFC 6901 JSON pointer into that document
    line: int | None  # 1-based, when the parser could tell
    rule: str
    severity: Severity
    message: str
    fix: str


def render_pointer(path: Pointer) -> str:
    """RFC 6901: ``~`` becomes ``~0`` and ``/`` becomes ``~1`` in each segment."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)
