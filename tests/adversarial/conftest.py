"""The adversarial suite's long variants (`@pytest.mark.slow`) run only when asked:
`RUN_SLOW=1 pytest tests/adversarial`, or `--run-slow` once the root conftest defines it.

A `pytest_addoption` here would be registered too late when pytest is started from the
repository root, so this reads an environment variable (and the option, if it exists).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def run_slow(config: pytest.Config) -> bool:
    option = config.getoption("--run-slow", default=False)
    return bool(option) or os.environ.get("RUN_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_slow(config):
        return
    # Deselected, not skipped: the long variants are a separate run
    # (docs/reliability.md), not a gap in the default one.
    # Only this directory's items: other suites decide for their own slow tests.
    long = [item for item in items if "slow" in item.keywords and HERE in Path(str(item.path)).parents]
    if long:
        items[:] = [item for item in items if item not in long]
        config.hook.pytest_deselected(items=long)
