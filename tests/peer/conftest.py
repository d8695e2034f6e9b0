"""One real OPA serving rego/, the demo's routes, keys for the test tokens and the peer
policy; the plugin (when it can be built) with the same files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.opa import DEMO_DATA, REGO_DIR, OpaProcess, start_opa
from tests.peer.corpus import POLICY_DATA
from tests.peer.plugin_process import PluginProcess, plugin_binary, start_plugin

PEER_POLICY = Path(__file__).parent / "policies" / "peer.rego"
DECISION_PATH = "peer/decision"


@pytest.fixture(scope="session")
def peer_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    keys = tmp_path_factory.mktemp("peer-data") / "keys.json"
    keys.write_text(json.dumps(POLICY_DATA), encoding="utf-8")
    return [REGO_DIR, DEMO_DATA, keys, PEER_POLICY]


@pytest.fixture(scope="session")
def peer_opa(peer_files: list[Path]) -> Iterator[OpaProcess]:
    opa = start_opa(peer_files)
    yield opa
    opa.stop()


@pytest.fixture(scope="session")
def plugin(peer_files: list[Path]) -> Iterator[PluginProcess]:
    binary = plugin_binary()
    assert binary is not None, "only requested when the plugin is installed"
    process = start_plugin(binary, DECISION_PATH, peer_files)
    yield process
    process.stop()
