"""The policy the deployments ship denies every request until it is configured.

OPA is started on exactly what the Kubernetes pod mounts (the `opa-policy` ConfigMap,
each key at its path from the Deployment's items) and asked about requests that the
demo's routes, a demo key or a test token would let through: every answer is a deny.
docker compose mounts `rego/` itself, less the Rego tests, which is the same set of files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from deploy.render import DEPLOY_DIR, POLICY_DIR
from tests.fixtures.opa import OpaProcess, start_opa

KUBERNETES_DIR = DEPLOY_DIR / "kubernetes"


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES_DIR / name).read_text()) if doc]


def mounted_policy_files() -> dict[str, str]:
    """Path under OPA's policy directory -> content, as the pod sees it."""
    [configmap] = [d for d in _documents("configmaps.yaml") if d["metadata"]["name"] == "opa-policy"]
    [deployment] = _documents("deployment.yaml")
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "opa-policy"]
    return {item["path"]: configmap["data"][item["key"]] for item in volume["configMap"]["items"]}


@pytest.fixture(scope="module")
def shipped_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaProcess]:
    root = tmp_path_factory.mktemp("pod-policies")
    for relative, content in mounted_policy_files().items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    opa = start_opa([root])
    yield opa
    opa.stop()


def _token() -> str:
    """A token the test keys verify (the shipped policy has no keys at all)."""
    text = (POLICY_DIR / "lib" / "fixtures_test.rego").read_text()
    start = text.index('"eyJ')
    return text[start + 1 : text.index('"', start + 1)]


def _input(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    segments = path.lstrip("/").split("/")
    return {
        "attributes": {"request": {"http": {"method": method, "path": path, "headers": headers}}},
        "parsed_path": segments,
        "parsed_query": {},
    }


def test_compose_and_kubernetes_mount_the_same_policy_files() -> None:
    in_rego = {
        path.relative_to(POLICY_DIR).as_posix(): path.read_text()
        for path in POLICY_DIR.rglob("*")
        if path.is_file() and path.suffix in {".rego", ".json"} and not path.name.endswith("_test.rego")
    }
    assert mounted_policy_files() == in_rego


@pytest.mark.parametrize(
    ("decision_path", "method", "path", "headers"),
    [
        ("envoy/authz/allow", "GET", "/public/hello", {}),
        ("envoy/authz/allow", "GET", "/", {}),
        ("envoy/authz/allow", "GET", "/api/orders", {"x-api-key": "demo-secret-key"}),
        ("envoy/authz/allow", "GET", "/api/orders", {"authorization": "Bearer %s"}),
        ("envoy/authz/allow", "POST", "/api/orders", {"authorization": "Bearer %s"}),
        ("agents/mcp/allow", "GET", "/mcp", {"authorization": "Bearer %s"}),
        ("agents/secrets/allow", "GET", "/v1/secret/data/billing", {"authorization": "Bearer %s"}),
        ("agents/jit/allow", "POST", "/deployments/web/restart", {}),
    ],
)
def test_the_shipped_policy_denies_until_configured(
    shipped_opa: OpaProcess, decision_path: str, method: str, path: str, headers: dict[str, str]
) -> None:
    headers = {name: value.replace("%s", _token()) for name, value in headers.items()}
    body = json.dumps({"input": _input(method, path, headers)})
    reply = shipped_opa.request("POST", f"/v1/data/{decision_path}", body=body)
    assert reply.status == 200, reply.body
    result = json.loads(reply.body)["result"]
    assert result is False or result["allowed"] is False, result
