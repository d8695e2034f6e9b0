"""The differential test's long variant (`@pytest.mark.slow`) runs only when asked:
`RUN_SLOW=1 pytest tests/differential` (see tests/adversarial/conftest.py for why this
reads an environment variable rather than defining an option)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.conftest import run_slow

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_slow(config):
        return
    # Deselected, not skipped: the long variant is a separate run (docs/reliability.md).
    long = [item for item in items if "slow" in item.keywords and HERE in Path(str(item.path)).parents]
    if long:
        items[:] = [item for item in items if item not in long]
        config.hook.pytest_deselected(items=long)
