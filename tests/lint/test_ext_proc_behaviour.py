"""What ext_proc's failure_mode_allow does on Envoy 1.40 when its server cannot
be reached, and that the linter reports the setting on the same filters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from tests.lint.helpers import lint
from tests.lint.test_envoy_behaviour import _get, cluster, running_envoy
from tests.lint.test_istio_behaviour import listener

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


def ext_proc(**settings: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": EXT_PROC_TYPE,
            "grpc_service": {"envoy_grpc": {"cluster_name": "nowhere"}, "timeout": "0.25s"},
            **settings,
        },
    }


# listener -> ext_proc settings; its server is never reachable.
CASES: dict[str, dict[str, Any]] = {
    "fail_open": {"failure_mode_allow": True},
    "fail_open_json_name": {"failureModeAllow": True},
    "closed": {},
}


def bootstrap() -> dict[str, Any]:
    return {
        "static_resources": {
            "listeners": [listener(name, [ext_proc(**settings)]) for name, settings in CASES.items()],
            "clusters": [cluster("nowhere", 1)],
        }
    }


def test_the_linter_flags_the_listeners_that_fail_open(tmp_path: Path) -> None:
    path = tmp_path / "ext-proc.yaml"
    path.write_text(yaml.safe_dump(bootstrap()))
    flagged = {f.path.split("/")[3] for f in lint(path).findings if f.rule == "ext-proc-failure-mode-allow"}
    assert flagged == {"0", "1"}  # the listeners failing open, in either spelling


async def test_a_failing_ext_proc_server_lets_the_request_through_only_when_failing_open(
    tmp_path: Path,
) -> None:
    async with running_envoy(yaml.safe_dump(bootstrap()), tmp_path) as ports:
        seen = {name: (await asyncio.to_thread(_get, ports[name], "/"))[0] for name in CASES}
    assert seen == {"fail_open": 200, "fail_open_json_name": 200, "closed": 500}
