"""The command line: exit status, text and JSON output, options, wiring."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

from sidecar.lint.cli import add_lint_parser, main, run
from tests.lint.helpers import FIXTURES, ext_authz


def lint_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_configs_exit_0_with_nothing_to_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint_cli(capsys, FIXTURES / "clean")
    assert code == 0
    assert out.strip() == "0 error(s), 0 warning(s), 0 info in 5 file(s), 6 configuration document(s) checked"


def test_info_only_exits_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = yaml.safe_load((FIXTURES / "clean/envoy-bootstrap.yaml").read_text())
    authz = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del authz["http_filters"][0]["typed_config"]["status_on_error"]
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(config))
    code, out, _ = lint_cli(capsys, tmp_path, "--format", "json")
    assert code == 0
    assert [f["rule"] for f in json.loads(out)["findings"]] == ["status-on-error-default"]


def test_a_warning_alone_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint_cli(capsys, FIXTURES / "gateway/timeout.yaml", "--format", "json")
    assert code == 1
    assert json.loads(out)["summary"] == {"error": 0, "warning": 1, "info": 0}


def test_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli(capsys, FIXTURES / "envoy/failure-mode-allow.yaml")[0] == 1


@pytest.mark.parametrize("name", ["unclosed.yaml", "trailing-comma.json", "configmap-bad-mesh.yaml"])
def test_an_unparseable_file_exits_2_naming_it(capsys: pytest.CaptureFixture[str], name: str) -> None:
    broken = FIXTURES / "broken" / name
    code, _, err = lint_cli(capsys, broken, FIXTURES / "envoy/failure-mode-allow.yaml")
    assert code == 2
    assert f"opa-sidecar lint: {broken}: " in err


def test_a_missing_or_undecodable_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = lint_cli(capsys, tmp_path / "nope.yaml")
    assert (code, err.strip()) == (
        2,
        f"opa-sidecar lint: {tmp_path / 'nope.yaml'}: no such file or directory",
    )
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    code, _, err = lint_cli(capsys, tmp_path / "latin1.yaml")
    assert code == 2 and "cannot read" in err


def test_json_output_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint_cli(capsys, "--format", "json", FIXTURES / "istio/authorization-policies.yaml")
    report = json.loads(out)
    assert code == 1
    assert set(report) == {"version", "findings", "errors", "checked", "summary"}
    assert report["version"] == 1
    first = report["findings"][0]
    assert set(first) == {"file", "document", "path", "line", "rule", "severity", "message", "fix"}
    assert (first["document"], first["path"], first["line"], first["rule"], first["severity"]) == (
        0,
        "/spec",
        4,
        "custom-policy-no-rules",
        "warning",
    )
    assert [f["document"] for f in report["findings"]] == [0, 1, 1, 2, 2, 3, 4]
    assert report["checked"][4] == {
        "file": str(FIXTURES / "istio/authorization-policies.yaml"),
        "document": 4,
        "kinds": ["istio-authorization-policy"],
    }
    # document 2 scopes its CUSTOM rule by a path a client can write around (a warning); no ALLOW
    # policy covers what documents 1 and 2 skip (a warning each)
    assert report["summary"] == {"error": 1, "warning": 6, "info": 0}


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = FIXTURES / "envoy/failure-mode-allow.yaml"
    _, out, _ = lint_cli(capsys, fixture)
    lines = out.splitlines()
    lines = lines[lines.index(next(line for line in lines if line.startswith(f"{fixture}:26:"))) :]
    assert lines[0].startswith(f"{fixture}:26: error: failure_mode_allow: true lets a request through")
    assert lines[0].endswith("[failure-mode-allow]")
    assert lines[1] == f"    at {ext_authz(0)}/failure_mode_allow"
    assert lines[2].startswith("    fix: set failure_mode_allow: false")
    # the warnings: two listeners whose forwarded facts the client can write
    assert lines[-1] == "2 error(s), 4 warning(s), 1 info in 1 file(s), 1 configuration document(s) checked"


def test_later_documents_are_named_in_text(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = lint_cli(capsys, FIXTURES / "istio/authorization-policies.yaml")
    assert "    at /spec\n" in out
    assert "    at /metadata/annotations/istio.io~1dry-run (document 3)\n" in out


def test_sidecar_budget_moves_the_timeout_findings(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = FIXTURES / "envoy/timeouts.yaml"

    def rules(*options: str) -> list[str]:
        _, out, _ = lint_cli(capsys, fixture, "--format", "json", *options)
        return [f["rule"] for f in json.loads(out)["findings"] if "timeout" in f["rule"]]

    assert rules() == ["missing-timeout", "timeout-below-budget", "timeout-below-budget"]
    # 0.25 s needs 289 ms: Envoy's 200 ms default is now too short.
    assert rules("--sidecar-budget", "0.25") == ["timeout-below-budget"] * 3
    # 0.05 s needs 67 ms: the 100 ms timeout is enough, 5 ms is not.
    assert rules("--sidecar-budget", "0.05") == ["missing-timeout", "timeout-below-budget"]


def test_envoy_max_request_bytes_moves_the_body_limit_findings(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = FIXTURES / "envoy/request-view.yaml"

    def limits(*options: str) -> list[tuple[str, ...]]:
        _, out, _ = lint_cli(capsys, fixture, "--format", "json", *options)
        pattern = re.compile(
            r"max_request_bytes (\d+), but the sidecar was told (\d+) \(--envoy-max-request-bytes\)"
        )
        found = [pattern.search(f["message"]) for f in json.loads(out)["findings"]]
        return [match.groups() for match in found if match is not None]

    # Envoy cuts at 16 bytes on the listener and at 4096 on one route; the sidecar's default is 8192.
    assert limits() == [("4096", "8192"), ("16", "8192")]  # in line order: the route comes first
    assert limits("--envoy-max-request-bytes", "16") == [("4096", "16")]


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "many", ""])
def test_a_bad_envoy_max_request_bytes_is_refused(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--envoy-max-request-bytes", bad, str(FIXTURES / "clean")])
    assert stopped.value.code == 2
    assert "--envoy-max-request-bytes" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_budget_is_refused(capsys: pytest.CaptureFixture[str], bad: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--sidecar-budget", bad, str(FIXTURES / "clean")])
    assert stopped.value.code == 2
    assert "--sidecar-budget" in capsys.readouterr().err


def test_directories_are_searched_for_yaml_and_json_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "nested/gw.yml").write_text((FIXTURES / "gateway/timeout.yaml").read_text())
    (tmp_path / ".hidden/bad.yaml").write_text("{{{")
    (tmp_path / "notes.txt").write_text("{{{")
    (tmp_path / "deployment.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\n")
    code, out, _ = lint_cli(capsys, tmp_path, "--format", "json")
    report = json.loads(out)
    assert code == 1
    assert [c["file"] for c in report["checked"]] == [str(tmp_path / "nested/gw.yml")] * 2


def test_says_so_when_nothing_was_recognised(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "deployment.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\n")
    code, _, err = lint_cli(capsys, tmp_path)
    assert code == 0
    assert "no Envoy, Istio or Envoy Gateway configuration found" in err


def test_add_lint_parser_wires_into_a_parent_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="opa-sidecar")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve")
    add_lint_parser(commands)
    args = parser.parse_args(["lint", "--format", "json", str(FIXTURES / "gateway/timeout.yaml")])
    assert args.command == "lint"
    assert run(args) == 1
    assert json.loads(capsys.readouterr().out)["summary"]["warning"] == 1
