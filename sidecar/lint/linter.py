"""Paths in, findings out: load every file, run each linter on each document,
and place every finding in its file, document and line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from sidecar.lint import agentgateway, ai_gateway, envoy, gateway, istio, rules
from sidecar.lint.envoy_context import EnvoyContext, survey
from sidecar.lint.findings import Finding, Issue, Severity, render_pointer
from sidecar.lint.gateway_context import GatewayContext, survey_gateway
from sidecar.lint.istio_context import IstioContext, survey_istio
from sidecar.lint.loader import Document, LoadError, discover, load_file
from sidecar.lint.sidecar_settings import SidecarSettings
from sidecar.lint.values import Json
from sidecar.lint.waivers import absolute, find_waivers

Linter = Callable[[Json, SidecarSettings], tuple[set[str], list[Issue]]]
LINTERS: tuple[Linter, ...] = (envoy.lint, istio.lint, gateway.lint, agentgateway.lint, ai_gateway.lint)

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Checked:
    """A document one of the linters recognised."""

    file: str
    document: int
    kinds: tuple[str, ...]


@dataclass(slots=True)
class LintResult:
    findings: list[Finding] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    checked: list[Checked] = field(default_factory=list)
    files: int = 0

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_UNREADABLE
        return EXIT_FINDINGS if any(f.severity.fails for f in self.findings) else EXIT_CLEAN


def lint_paths(paths: Sequence[str], sidecar: SidecarSettings) -> LintResult:
    """Every file is read before any is linted: a route table in one file is
    checked against the connection managers of the others (RDS)."""
    result = LintResult()
    documents: list[Document] = []
    for item in discover(paths):
        if isinstance(item, LoadError):
            result.errors.append(item)
            continue
        result.files += 1
        try:
            documents += load_file(item)
        except LoadError as exc:
            result.errors.append(exc)
    context = survey(document.data for document in documents)
    gateway_context = survey_gateway(document.data for document in documents)
    istio_context = survey_istio(document.data for document in documents)
    for document in documents:
        kinds, findings = lint_document(document, sidecar, context, gateway_context, istio_context)
        if kinds:
            result.checked.append(Checked(document.file, document.index, tuple(sorted(kinds))))
            result.findings += findings
    return result


def lint_document(
    document: Document,
    sidecar: SidecarSettings,
    context: EnvoyContext | None = None,
    gateway_context: GatewayContext | None = None,
    istio_context: IstioContext | None = None,
) -> tuple[set[str], list[Finding]]:
    kinds: set[str] = set()
    issues: list[Issue] = []
    linters: tuple[Linter, ...] = (
        partial(envoy.lint, context=context),
        partial(istio.lint, context=istio_context),
        partial(gateway.lint, context=gateway_context),
        agentgateway.lint,
        ai_gateway.lint,
    )
    for linter in linters:
        found, more = linter(document.data, sidecar)
        kinds |= found
        issues += more
    if not kinds:
        return kinds, []
    issues += [_duplicate(path) for path in document.duplicates]
    waivers = find_waivers(document)
    findings = []
    for issue in issues:
        where = absolute(document, issue.path)
        waiver = next((w for w in waivers if w.covers(issue.rule.id, where)), None)
        severity, message = issue.rule.severity, issue.message
        if waiver is not None:
            severity, message = Severity.INFO, f"waived ({waiver.reason or 'no reason given'}): {message}"
        findings.append(
            Finding(
                file=document.file,
                document=document.index,
                path=render_pointer((*document.base, *issue.path)),
                line=document.line_of(issue.path),
                rule=issue.rule.id,
                severity=severity,
                message=message,
                fix=issue.fix,
            )
        )
    findings.sort(key=lambda f: (f.line or 0, f.path))
    return kinds, findings


def _duplicate(path: tuple[str | int, ...]) -> Issue:
    return rules.DUPLICATE_KEY.issue(
        path,
        f"{path[-1]} is set twice in this mapping: Envoy 1.40 and YAML/JSON parsers keep the last value, "
        "while a reader may stop at the first",
        "keep a single entry",
    )
