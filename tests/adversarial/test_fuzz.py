"""A short run of each atheris fuzzer (input builder, result interpreter): a clean exit,
no crash artifact, and enough inputs executed for the run to mean something. The long
run is documented in docs/reliability.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adversarial.fuzz_seeds import input_seeds, result_seeds, write_corpus
from tests.fixtures.opa import REPO_ROOT

SECONDS = 10
MIN_RUNS = 2000  # several thousand a second here; far fewer means the target is not running
SEEDS = {"tests.adversarial.fuzz_input": input_seeds, "tests.adversarial.fuzz_result": result_seeds}
FUZZERS = list(SEEDS)
_DONE = re.compile(r"stat::number_of_executed_units: (\d+)")


@pytest.fixture(scope="module")
def fuzz_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """Both fuzzers side by side (one core each): exit status, output and artifact directory."""
    started = {}
    for module in FUZZERS:
        name = module.rpartition(".")[2]
        artifacts = tmp_path_factory.mktemp(name)
        # The fuzzer's own seeds, in a corpus directory that goes away with the test's.
        corpus = write_corpus(tmp_path_factory.mktemp(f"{name}-corpus"), SEEDS[module]())
        command = [
            sys.executable, "-m", module,
            f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=1024", "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/", str(corpus),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        started[module] = (process, artifacts)
    results = {}
    for module, (process, artifacts) in started.items():
        output, _ = process.communicate(timeout=SECONDS * 6)
        results[module] = (process.returncode, output, artifacts)
    return results


@pytest.mark.parametrize("module", FUZZERS)
def test_fuzzer_runs_clean(fuzz_runs: dict[str, tuple[int, str, Path]], module: str) -> None:
    returncode, output, artifacts = fuzz_runs[module]
    assert returncode == 0, output[-4000:]
    assert not list(artifacts.iterdir()), output[-4000:]
    runs = _DONE.search(output)
    assert runs is not None, output[-4000:]
    assert int(runs.group(1)) >= MIN_RUNS, output[-2000:]
