"""The HTTP listeners' settings: where each listens, and the limits of the checks listener."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sidecar.cli import build_parser
from sidecar.config import ConfigError, ListenAddress, Settings, check_combinations, settings_from
from sidecar.http_limits import authz_limits, probe_limits


def settings(*argv: str) -> Settings:
    return settings_from(
        build_parser().parse_args(["serve", "--opa-url", "http://127.0.0.1:8181", *argv]), env={}
    )


def test_checks_and_probes_listen_apart_on_loopback_by_default() -> None:
    s = settings()
    assert s.http_addr == ListenAddress("127.0.0.1", 9192)
    assert s.probe_addr == ListenAddress("127.0.0.1", 9193)
    limits = authz_limits(s)
    assert (limits.max_header_bytes, limits.max_headers, limits.max_body_bytes) == (65536, 128, 65536)
    assert (limits.max_connections, limits.header_timeout, limits.body_timeout) == (128, 2.0, 2.0)


def test_the_probe_listener_takes_no_body_and_few_connections() -> None:
    limits = probe_limits(settings("--http-max-body-bytes", "1048576", "--http-max-connections", "4096"))
    assert (limits.max_body_bytes, limits.max_connections) == (0, 32)


@pytest.mark.parametrize(
    "argv",
    [
        ["--probe-addr", "127.0.0.1:9192"],
        ["--probe-addr", "127.0.0.1:9191"],
        ["--http-addr", "unix:///run/a.sock", "--probe-addr", "unix:///run/a.sock"],
    ],
)
def test_every_listener_needs_its_own_address(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match="must all differ"):
        settings(*argv)


def test_port_zero_may_repeat() -> None:
    """Port 0 (only set in process, as the tests do) asks each listener for a free port."""
    any_port = ListenAddress("127.0.0.1", 0)
    check_combinations(replace(settings(), grpc_addr=any_port, http_addr=any_port, probe_addr=any_port))


def test_workers_take_unix_listeners() -> None:
    """The --workers parent binds unix sockets as it binds TCP ports; the workers inherit them."""
    unix = ["--grpc-addr", "unix:///run/g.sock", "--http-addr", "unix:///run/h.sock"]
    s = settings("--workers", "2", *unix, "--probe-addr", "unix:///run/probe.sock")
    assert (s.workers, s.probe_addr) == (2, ListenAddress(unix_path="/run/probe.sock"))
    with pytest.raises(ConfigError, match="--grpc-addr, --http-addr and --probe-addr must all differ"):
        settings("--workers", "2", *unix, "--probe-addr", "unix:///run/g.sock")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--http-max-body-bytes", "10"),
        ("--http-max-header-bytes", "100"),
        ("--http-max-headers", "0"),
        ("--http-max-connections", "0"),
        ("--http-header-timeout", "0"),
        ("--http-body-timeout", "nan"),
        ("--http-idle-timeout", "-1"),
    ],
)
def test_a_limit_out_of_range_stops_the_start_naming_it(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        settings(flag, value)
