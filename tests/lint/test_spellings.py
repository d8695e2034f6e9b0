"""Each fail-open setting written in every spelling Envoy 1.40 reads: the
linter reports the same finding for each, and a real Envoy, loading them all,
holds the fail-open value in its config dump exactly there."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidecar.lint.envoy_canonical import snake_case
from tests.lint.helpers import lint
from tests.lint.test_envoy_behaviour import _get, cluster, running_envoy

AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
FILTER_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
NAME = "envoy.filters.http.ext_authz"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# Written as YAML leaves them: unquoted words YAML itself reads as true (and
# Envoy too), then strings Envoy's JSON parser reads as true.
TRUE = ["RAW:true", "RAW:on", "RAW:Yes", "RAW:y", "true", "True", "yes", "Y", "t", "1"]
FIFTY = [(50, "HUNDRED"), ("50", "hundred"), (50.0, 0), ("5e1", "0"), (5000, "ten_thousand")]
OK = [200, "200", "OK", "ok"]


def listener(name: str, authz: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "app",
                                        "domains": ["*"],
                                        "routes": [
                                            {"match": {"prefix": "/"}, "route": {"cluster": "app"}, **route}
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": NAME,
                                    "typed_config": {
                                        "@type": AUTHZ_TYPE,
                                        "grpc_service": {"envoy_grpc": {"cluster_name": "opa_sidecar"}},
                                        **authz,
                                    },
                                },
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": ROUTER_TYPE},
                                },
                            ],
                        },
                    }
                ]
            }
        ],
    }


def camel(value: Any, names: bool = False) -> Any:
    """Every field name in its JSON spelling; map keys (filter names) kept."""
    if isinstance(value, list):
        return [camel(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        (key if names else re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)): camel(
            item, names=key == "typed_per_filter_config"
        )
        for key, item in value.items()
    }


def chain(dumped: dict[str, Any]) -> dict[str, Any]:
    hcm: dict[str, Any] = dumped["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def authz_of(dumped: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = chain(dumped)["http_filters"][0]["typed_config"]
    return found


def per_route_of(dumped: dict[str, Any]) -> dict[str, Any]:
    route = chain(dumped)["route_config"]["virtual_hosts"][0]["routes"][0]
    found: dict[str, Any] = route["typed_per_filter_config"][NAME]
    return found


def fail_open(config: dict[str, Any]) -> bool:
    return config.get("failure_mode_allow") is True


def is_set(config: dict[str, Any], field: str) -> bool:
    return config.get(field) is True


def disabled(word: str) -> dict[str, Any]:
    return {"@type": PER_ROUTE_TYPE, "disabled": word}


@dataclass(frozen=True)
class Case:
    rule: str
    authz: dict[str, Any]
    route: dict[str, Any]
    envoy_read: Callable[[dict[str, Any]], bool]  # the fail-open value, in Envoy's config dump


def cases() -> list[Case]:
    found = []
    for word in TRUE:
        found += [
            Case("failure-mode-allow", {"failure_mode_allow": word}, {}, lambda d: fail_open(authz_of(d))),
            Case("shadow-mode", {"shadow_mode": word}, {}, lambda d: is_set(authz_of(d), "shadow_mode")),
            Case(
                "per-route-disabled",
                {},
                {"typed_per_filter_config": {NAME: disabled(word)}},
                lambda d: per_route_of(d).get("disabled") is True,
            ),
            Case(
                "per-route-disabled",
                {},
                {"typed_per_filter_config": {NAME: {"@type": FILTER_CONFIG_TYPE, "config": disabled(word)}}},
                lambda d: per_route_of(d)["config"].get("disabled") is True,
            ),
        ]  # fmt: skip
    for numerator, denominator in FIFTY:
        found.append(
            Case(
                "filter-disabled-fraction",
                {"filter_enabled": {"default_value": {"numerator": numerator, "denominator": denominator}}},
                {},
                lambda d: authz_of(d)["filter_enabled"]["default_value"].get("numerator") in (50, 5000),
            )
        )
    for code in OK:
        found.append(
            Case(
                "status-on-error-2xx",
                {"status_on_error": {"code": code}},
                {},
                lambda d: authz_of(d)["status_on_error"]["code"] == "OK",
            )
        )
    return found


CASES = [(case, spelled) for case in cases() for spelled in (False, True)]


def bootstrap_text() -> str:
    listeners = []
    for index, (case, spelled) in enumerate(CASES):
        written = listener(f"s{index}", copy.deepcopy(case.authz), copy.deepcopy(case.route))
        listeners.append(camel(written) if spelled else written)
    config = {
        "static_resources": {
            "listeners": listeners,
            "clusters": [cluster("opa_sidecar", 1), cluster("app", 1)],
        }
    }
    text = yaml.safe_dump(config)
    return re.sub(r"'?RAW:([A-Za-z]+)'?", r"\1", text)


def test_camel_spelling_is_what_the_canonical_reader_undoes() -> None:
    assert snake_case("failureModeAllow") == "failure_mode_allow"
    assert snake_case("envoy.filters.http.ext_authz") == "envoy.filters.http.ext_authz"
    assert camel({"failure_mode_allow": 1})["failureModeAllow"] == 1


def test_every_spelling_gets_the_same_finding(tmp_path: Path) -> None:
    config = tmp_path / "spellings.yaml"
    config.write_text(bootstrap_text())
    found: dict[int, set[str]] = {}
    for finding in lint(config).findings:
        found.setdefault(int(finding.path.split("/")[3]), set()).add(finding.rule)
    missed = [(i, case.rule, case.authz or case.route, spelled) for i, (case, spelled) in enumerate(CASES)
              if case.rule not in found.get(i, set())]  # fmt: skip
    assert missed == []
    assert len(CASES) >= 80


async def test_envoy_reads_each_spelling_as_the_fail_open_value(tmp_path: Path) -> None:
    async with running_envoy(bootstrap_text(), tmp_path) as ports:
        assert len(ports) == len(CASES)
        _, port = (tmp_path / "admin-address").read_text().strip().rsplit(":", 1)
        status, body = await asyncio.to_thread(_get, int(port), "/config_dump?resource=static_listeners")
    assert status == 200
    dumped = {item["listener"]["name"]: item["listener"] for item in json.loads(body)["configs"]}
    misread = [(i, case.rule, case.authz or case.route, spelled) for i, (case, spelled) in enumerate(CASES)
               if not case.envoy_read(dumped[f"s{i}"])]  # fmt: skip
    assert misread == []
