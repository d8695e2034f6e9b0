"""Every way agentgateway's config file and its AgentgatewayPolicy resource
spell a failure mode, at every place the setting can sit, gets one finding:
the fail-open value the rule, a value they refuse not-verified, a closed
value none. Generated from the tables below."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lint.helpers import lint

FILE_EXT_AUTHZ = {"allow": "agentgateway-fail-open", "deny": None, "Allow": "not-verified",
                  "ALLOW": "not-verified", "FailOpen": "not-verified"}  # fmt: skip
FILE_PROCESSOR = {"failOpen": "mcp-guardrails-fail-open", "failClosed": None, "FailOpen": "not-verified",
                  "failopen": "not-verified"}  # fmt: skip
RESOURCE_EXT_AUTH = {"FailOpen": "agentgateway-fail-open", "FailClosed": None, "failOpen": "not-verified",
                     "allow": "not-verified"}  # fmt: skip
RESOURCE_PROCESSOR = {"FailOpen": "mcp-guardrails-fail-open", "FailClosed": None, "failOpen": "not-verified"}


def route_policies(policies: dict[str, Any]) -> dict[str, Any]:
    route = {"name": "r", "backends": [{"host": "127.0.0.1:8080"}], "policies": policies}
    return {"binds": [{"port": 3000, "listeners": [{"name": "l", "routes": [route]}]}]}


def top_level_policies(policies: dict[str, Any]) -> dict[str, Any]:
    return {"binds": [], "policies": [{"name": "p", "target": {"gateway": "g"}, "policy": policies}]}


def mcp_policies(policies: dict[str, Any]) -> dict[str, Any]:
    return {"mcp": {"port": 3000, "targets": [], "policies": policies}}


PLACES = {"route": route_policies, "top_level": top_level_policies, "mcp": mcp_policies}


def ext_authz(mode: str, conditional: bool) -> dict[str, Any]:
    settings = {"host": "127.0.0.1:9191", "failureMode": mode}
    if conditional:
        return {"extAuthz": {"conditional": [{"condition": "true", **settings}]}}
    return {"extAuthz": settings}


def rules_found(tmp_path: Path, document: dict[str, Any]) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    result = lint(path)
    assert not result.errors
    return [f.rule for f in result.findings]


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("mode", sorted(FILE_EXT_AUTHZ))
def test_config_file_ext_authz(tmp_path: Path, mode: str, place: str, conditional: bool) -> None:
    expected = FILE_EXT_AUTHZ[mode]
    found = rules_found(tmp_path, PLACES[place](ext_authz(mode, conditional)))
    assert found == ([expected] if expected else [])


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("mode", sorted(FILE_PROCESSOR))
def test_config_file_mcp_processor(tmp_path: Path, mode: str, place: str) -> None:
    processor = {"kind": "remote", "host": "127.0.0.1:4445", "failureMode": mode, "methods": {"*": "request"}}
    expected = FILE_PROCESSOR[mode]
    found = rules_found(tmp_path, PLACES[place]({"mcpGuardrails": {"processors": [processor]}}))
    assert found == ([expected] if expected else [])


def resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "agentgateway.dev/v1alpha1", "kind": "AgentgatewayPolicy",
            "metadata": {"name": "p", "namespace": "agents"}, "spec": spec}  # fmt: skip


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
@pytest.mark.parametrize("mode", sorted(RESOURCE_EXT_AUTH))
def test_resource_ext_auth(tmp_path: Path, mode: str, conditional: bool) -> None:
    settings = {"backendRef": {"name": "opa-sidecar", "port": 9191}, "failureMode": mode}
    ext_auth = {"conditional": [{"condition": "true", "policy": settings}]} if conditional else settings
    expected = RESOURCE_EXT_AUTH[mode]
    found = rules_found(tmp_path, resource({"traffic": {"extAuth": ext_auth}}))
    assert found == ([expected] if expected else [])


@pytest.mark.parametrize("mode", sorted(RESOURCE_PROCESSOR))
def test_resource_mcp_processor(tmp_path: Path, mode: str) -> None:
    remote = {"backendRef": {"name": "mcp-policy", "port": 4445}, "failureMode": mode}
    processors = [{"remote": remote, "methods": {"*": "Request"}}]
    expected = RESOURCE_PROCESSOR[mode]
    found = rules_found(tmp_path, resource({"backend": {"mcp": {"guardrails": {"processors": processors}}}}))
    assert found == ([expected] if expected else [])
