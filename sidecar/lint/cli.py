"""``opa-sidecar lint PATH...``: exit 0 when clean (info only), 1 on errors or
warnings, 2 when a file cannot be read or parsed."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sidecar.config import Settings
from sidecar.lint.sidecar_settings import DEFAULT_ENVOY_MAX_REQUEST_BYTES

DEFAULT_BUDGET = next(f.default for f in fields(Settings) if f.name == "opa_timeout")


def add_lint_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``lint`` subcommand to an ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lint",
        help="find proxy settings that let requests through when authorization fails or is skipped",
        description=(
            "Check Envoy configs (YAML or JSON, several documents per file), Istio MeshConfig extension "
            "providers and AuthorizationPolicy, and Envoy Gateway SecurityPolicy for settings that let a "
            "request through when authorization fails or is skipped. Directories are searched for "
            "*.yaml, *.yml and *.json. Exit status: 0 clean (info only), 1 errors or warnings, "
            "2 a file cannot be read or parsed."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    parser.add_argument(
        "--sidecar-budget",
        type=_seconds,
        default=DEFAULT_BUDGET,
        metavar="SECONDS",
        help=f"the sidecar's --opa-timeout, to check proxy timeouts against (default: {DEFAULT_BUDGET:g})",
    )
    parser.add_argument(
        "--envoy-max-request-bytes",
        type=_byte_count,
        default=DEFAULT_ENVOY_MAX_REQUEST_BYTES,
        metavar="BYTES",
        help=(
            "the sidecar's --envoy-max-request-bytes, to check Envoy's with_request_body.max_request_bytes "
            f"against (default: {DEFAULT_ENVOY_MAX_REQUEST_BYTES})"
        ),
    )
    return parser


def _byte_count(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of bytes: {raw!r}")
    return int(raw)


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {raw!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Lint with parsed arguments (from ``add_lint_parser``); print; return the exit status."""
    from sidecar.lint.linter import lint_paths  # PyYAML loads only when linting
    from sidecar.lint.report import render_json, render_text
    from sidecar.lint.sidecar_settings import SidecarSettings
    from sidecar.lint.timeouts import Budget

    sidecar = SidecarSettings(Budget(args.sidecar_budget), args.envoy_max_request_bytes)
    result = lint_paths(args.paths, sidecar)
    for error in result.errors:
        print(f"opa-sidecar lint: {error}", file=sys.stderr)
    print(render_json(result) if args.format == "json" else render_text(result))
    if not result.checked and not result.errors:
        print("opa-sidecar lint: no Envoy, Istio or Envoy Gateway configuration found", file=sys.stderr)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: ``argv`` holds the arguments after ``lint``."""
    parser = argparse.ArgumentParser(prog="opa-sidecar")
    add_lint_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lint", *(sys.argv[1:] if argv is None else argv)])
    return run(args)
