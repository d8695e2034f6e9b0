"""The project's own deploy/ configs lint clean (info at most)."""

from __future__ import annotations

from sidecar.lint.envoy import ENVOY
from sidecar.lint.report import render_text
from tests.lint.helpers import REPO, lint


def test_deploy_configs_lint_clean() -> None:
    result = lint(REPO / "deploy")
    assert not result.errors, result.errors
    assert [f for f in result.findings if f.severity.fails] == [], render_text(result)
    assert any(ENVOY in checked.kinds for checked in result.checked), "no Envoy config found under deploy/"
