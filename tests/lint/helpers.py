"""Shared by the linter tests: where the fixtures are, and linting them."""

from __future__ import annotations

from pathlib import Path

from sidecar.lint.linter import LintResult, lint_paths
from sidecar.lint.sidecar_settings import DEFAULT_ENVOY_MAX_REQUEST_BYTES, SidecarSettings
from sidecar.lint.timeouts import Budget

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]


def lint(
    *paths: Path | str, budget: float = 0.15, envoy_max_request_bytes: int = DEFAULT_ENVOY_MAX_REQUEST_BYTES
) -> LintResult:
    sidecar = SidecarSettings(Budget(budget), envoy_max_request_bytes)
    return lint_paths([str(p) for p in paths], sidecar)


def hcm(listener: int) -> str:
    """Pointer to the HTTP connection manager of a static listener."""
    return f"/static_resources/listeners/{listener}/filter_chains/0/filters/0/typed_config"


def ext_authz(listener: int, position: int = 0) -> str:
    """Pointer to the typed config of an HTTP filter of a static listener."""
    return f"{hcm(listener)}/http_filters/{position}/typed_config"
