"""Rendering a lint result: text for people, JSON for CI.

The JSON schema (``version`` 1) is stable: fields may be added, none removed
or renamed::

    {"version": 1,
     "findings": [{"file", "document", "path", "line", "rule", "severity", "message", "fix"}],
     "errors":   [{"file", "message"}],
     "checked":  [{"file", "document", "kinds"}],
     "summary":  {"error": n, "warning": n, "info": n}}
"""

from __future__ import annotations

import json
from collections import Counter

from sidecar.lint.findings import Severity
from sidecar.lint.linter import LintResult

SCHEMA_VERSION = 1


def summary(result: LintResult) -> dict[str, int]:
    counts = Counter(f.severity for f in result.findings)
    return {severity.value: counts.get(severity, 0) for severity in Severity}


def render_json(result: LintResult) -> str:
    document = {
        "version": SCHEMA_VERSION,
        "findings": [
            {
                "file": f.file,
                "document": f.document,
                "path": f.path,
                "line": f.line,
                "rule": f.rule,
                "severity": f.severity.value,
                "message": f.message,
                "fix": f.fix,
            }
            for f in result.findings
        ],
        "errors": [{"file": e.file, "message": e.reason} for e in result.errors],
        "checked": [{"file": c.file, "document": c.document, "kinds": list(c.kinds)} for c in result.checked],
        "summary": summary(result),
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def render_text(result: LintResult) -> str:
    lines = []
    for f in result.findings:
        place = f"{f.file}:{f.line}" if f.line is not None else f.file
        lines.append(f"{place}: {f.severity.value}: {f.message} [{f.rule}]")
        document = f" (document {f.document})" if f.document else ""
        lines.append(f"    at {f.path or '/'}{document}")
        lines.append(f"    fix: {f.fix}")
    counts = summary(result)
    documents = len(result.checked)
    lines.append(
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info in "
        f"{result.files} file(s), {documents} configuration document(s) checked"
    )
    return "\n".join(lines)
