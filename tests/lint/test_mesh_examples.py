"""deploy/istio and deploy/envoy-gateway: they lint without a single finding,
their Kubernetes objects match the Kubernetes schemas, and the Envoy
configuration each control plane writes from them is one Envoy 1.40 accepts.

istiod and Envoy Gateway cannot run here; the Envoy configuration follows what
each writes from these fields: istiod's authz builder (an RBAC filter whose
shadow rules mark the requests a CUSTOM policy selects, then ext_authz switched
on by that mark; failOpen -> failure_mode_allow, timeout -> grpc_service.timeout,
statusOnError -> status_on_error; DECODE_AND_MERGE_SLASHES -> normalize_path,
merge_slashes, unescaped slashes), and Envoy Gateway's translator (ext_authz
on the listener, its backend a cluster of the Service, HTTP/2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.e2e.deploy_files import validate_envoy_config
from tests.lint.helpers import REPO, lint
from tests.lint.test_envoy_behaviour import cluster
from tests.lint.test_istio_behaviour import AUTHZ_TYPE, EVERY_REQUEST, listener, shadow_rbac
from tests.lint.test_istio_behaviour import ext_authz as istio_ext_authz

ISTIO = REPO / "deploy/istio"
GATEWAY = REPO / "deploy/envoy-gateway"
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
CORE_KINDS = {"Namespace", "Service", "Deployment", "NetworkPolicy"}


def documents(directory: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def one(directory: Path, kind: str) -> dict[str, Any]:
    [found] = [doc for doc in documents(directory) if doc["kind"] == kind]
    return found


@pytest.mark.parametrize("directory", [ISTIO, GATEWAY], ids=["istio", "envoy-gateway"])
def test_the_example_lints_without_a_finding(directory: Path) -> None:
    result = lint(directory)
    assert not result.errors
    assert result.findings == []
    kinds = {kind for checked in result.checked for kind in checked.kinds}
    expected = (
        {"istio-mesh-config", "istio-authorization-policy"}
        if directory == ISTIO
        else {"gateway-security-policy"}
    )
    assert kinds == expected


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", [ISTIO, GATEWAY], ids=["istio", "envoy-gateway"])
def test_the_kubernetes_objects_match_the_schemas(directory: Path, version: str) -> None:
    core = [doc for doc in documents(directory) if doc["kind"] in CORE_KINDS]
    assert {"Namespace", "Service", "Deployment"} <= {doc["kind"] for doc in core}
    for document in core:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_providers_service_is_the_authorizers() -> None:
    [provider] = one(ISTIO, "IstioOperator")["spec"]["meshConfig"]["extensionProviders"]
    service = one(ISTIO, "Service")
    assert provider["envoyExtAuthzGrpc"]["service"] == (
        f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    )
    assert provider["envoyExtAuthzGrpc"]["port"] == service["spec"]["ports"][0]["port"]
    [policy] = [
        doc
        for doc in documents(ISTIO)
        if doc["kind"] == "AuthorizationPolicy" and doc["spec"]["action"] == "CUSTOM"
    ]
    assert policy["spec"]["provider"]["name"] == provider["name"]
    assert policy["spec"]["rules"] == [{}]  # every request of the workload is checked


def test_the_backend_is_the_authorizers_service() -> None:
    [backend] = one(GATEWAY, "SecurityPolicy")["spec"]["extAuth"]["grpc"]["backendRefs"]
    service = one(GATEWAY, "Service")
    assert (backend["name"], backend["namespace"], backend["port"]) == (
        service["metadata"]["name"],
        service["metadata"]["namespace"],
        service["spec"]["ports"][0]["port"],
    )
    grant = one(GATEWAY, "ReferenceGrant")
    assert grant["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": service["metadata"]["name"]}]


def _seconds(duration: str) -> float:
    return (
        float(duration.removesuffix("ms")) / 1000 if duration.endswith("ms") else float(duration.rstrip("s"))
    )


def istio_bootstrap() -> dict[str, Any]:
    mesh = one(ISTIO, "IstioOperator")["spec"]["meshConfig"]
    [provider] = mesh["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    name = f"outbound|{grpc['port']}||{grpc['service']}"
    authz = istio_ext_authz(name, status_on_error={"code": int(grpc["statusOnError"])})
    authz["typed_config"]["grpc_service"]["timeout"] = grpc["timeout"]
    authz["typed_config"]["failure_mode_allow"] = bool(grpc.get("failOpen", False))
    config = listener("inbound", [shadow_rbac(EVERY_REQUEST), authz])
    manager = config["filter_chains"][0]["filters"][0]["typed_config"]
    assert mesh["pathNormalization"]["normalization"] == "DECODE_AND_MERGE_SLASHES"
    manager.update(
        normalize_path=True, merge_slashes=True, path_with_escaped_slashes_action="UNESCAPE_AND_FORWARD"
    )
    return {"static_resources": {"listeners": [config], "clusters": [cluster(name, 9191)]}}


def gateway_bootstrap() -> dict[str, Any]:
    ext_auth = one(GATEWAY, "SecurityPolicy")["spec"]["extAuth"]
    name = "securitypolicy/my-app/opa-sidecar/0"
    authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": AUTHZ_TYPE,
            "transport_api_version": "V3",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": name},
                "timeout": f"{_seconds(ext_auth['timeout'])}s",
            },
            "failure_mode_allow": bool(ext_auth.get("failOpen", False)),
            "status_on_error": {"code": ext_auth["statusOnError"]},
        },
    }
    return {"static_resources": {"listeners": [listener("eg", [authz])], "clusters": [cluster(name, 9191)]}}


@pytest.mark.parametrize("build", [istio_bootstrap, gateway_bootstrap], ids=["istio", "envoy-gateway"])
def test_the_envoy_config_written_from_the_example_validates(build: Any, tmp_path: Path) -> None:
    config = build()
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    validate_envoy_config(path)
    [listener_config] = config["static_resources"]["listeners"]
    filters = listener_config["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    [authz] = [f["typed_config"] for f in filters if f["name"] == "envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": 503}
    assert (
        _seconds(authz["grpc_service"]["timeout"]) >= 0.178
    )  # the sidecar's default budget, see docs/lint.md
