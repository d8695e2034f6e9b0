"""Settings: defaults, env vars, and a clear refusal for every bad value."""

from __future__ import annotations

import pytest

from sidecar.cli import build_parser, main
from sidecar.config import ConfigError, ListenAddress, OpaURL, settings_from


def settings(*argv: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    args = build_parser().parse_args(["serve", *argv])
    return settings_from(args, env or {})


def test_defaults() -> None:
    s = settings("--opa-url", "http://127.0.0.1:8181")
    assert s.opa_url == OpaURL("http", "127.0.0.1", 8181)
    assert s.grpc_addr == ListenAddress("127.0.0.1", 9191)
    assert s.decision_path == "envoy/authz/allow"
    assert s.opa_timeout == 0.15
    assert s.max_inflight == 1024
    assert s.strict_builtin_errors is True


def test_env_vars_set_every_flag_and_flags_win() -> None:
    env = {
        "OPA_SIDECAR_OPA_URL": "https://opa.example:8443/base/",
        "OPA_SIDECAR_GRPC_ADDR": "unix:///run/authz.sock",
        "OPA_SIDECAR_DECISION_PATH": "/istio/authz/allow/",
        "OPA_SIDECAR_OPA_TIMEOUT": "0.05",
        "OPA_SIDECAR_MAX_INFLIGHT": "10",
        "OPA_SIDECAR_LENIENT_BUILTIN_ERRORS": "true",
    }
    s = settings(env=env)
    assert s.opa_url == OpaURL("https", "opa.example", 8443, "/base")
    assert s.grpc_addr == ListenAddress(unix_path="/run/authz.sock")
    assert s.decision_path == "istio/authz/allow"
    assert (s.opa_timeout, s.max_inflight, s.strict_builtin_errors) == (0.05, 10, False)
    assert settings("--max-inflight", "5", env=env).max_inflight == 5


def test_unix_opa_url() -> None:
    assert settings("--opa-url", "unix:///run/opa.sock").opa_url.unix_path == "/run/opa.sock"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], "--opa-url"),
        (["--opa-url", "ftp://x:1"], "--opa-url"),
        (["--opa-url", "http://user:pw@opa:8181"], "--opa-url"),
        (["--opa-url", "http://opa:99999"], "--opa-url"),
        (["--opa-url", "http://opa:8181?x=1"], "--opa-url"),
        (["--opa-url", "unix://relative.sock"], "--opa-url"),
        (["--opa-url", "http://o:1", "--grpc-addr", "9191"], "--grpc-addr"),
        (["--opa-url", "http://o:1", "--grpc-addr", "host:0"], "--grpc-addr"),
        (["--opa-url", "http://o:1", "--decision-path", "/"], "--decision-path"),
        (["--opa-url", "http://o:1", "--decision-path", "a//b"], "--decision-path"),
        (["--opa-url", "http://o:1", "--opa-timeout", "0"], "--opa-timeout"),
        (["--opa-url", "http://o:1", "--opa-timeout", "nan"], "--opa-timeout"),
        (["--opa-url", "http://o:1", "--opa-timeout", "fast"], "--opa-timeout"),
        (["--opa-url", "http://o:1", "--max-inflight", "0"], "--max-inflight"),
        (["--opa-url", "http://o:1", "--max-inflight", "1.5"], "--max-inflight"),
        (["--opa-url", "http://o:1", "--log-level", "loud"], "--log-level"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(argv: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings(*argv)


def test_bad_env_value_names_the_env_var() -> None:
    with pytest.raises(ConfigError, match="OPA_SIDECAR_OPA_TIMEOUT"):
        settings("--opa-url", "http://o:1", env={"OPA_SIDECAR_OPA_TIMEOUT": "-1"})


def test_credentials_in_the_url_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        settings("--opa-url", "http://user:hunter2@opa:8181")
    assert "hunter2" not in str(info.value)


def test_main_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--opa-url", "http://o:1", "--opa-timeout", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("opa-sidecar: invalid --opa-timeout")
