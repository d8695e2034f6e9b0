"""`make demo`: the newcomer's tour runs start to finish with the repository's policies."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from deploy.render import REPO_ROOT
from scripts import demo


def test_the_tour_shows_allow_deny_and_opa_down_deny() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.demo", "--once", "--port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "4 of 4 steps as expected." in out
    assert out.count("  OK: ") == 4 and "UNEXPECTED" not in out
    assert "$ curl -i http://127.0.0.1:" in out
    assert "reason opa_unreachable" in out


def test_a_taken_port_is_reported_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert demo.main(["--once", "--port", str(port)]) == demo.EXIT_CANNOT_START
    assert f"Port {port} is taken" in capsys.readouterr().out
