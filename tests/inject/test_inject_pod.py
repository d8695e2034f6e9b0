"""What inject writes into a pod and beside it: Envoy's configuration rendered from the
project's template for the pod's ports, the application's port handed to Envoy, the
Service and NetworkPolicy pointing at Envoy, the containers locked down as in
deploy/kubernetes, and the options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.render import DEPLOY_DIR, EnvoyAddresses, render_envoy
from tests.e2e.deploy_files import EnvoyConfig, host_port, sidecar_settings, validate_envoy_config
from tests.inject.corpus import Manifest, deployment, pod, service
from tests.inject.helpers import by_kind, load, pod_spec_of, run_inject, write


def _containers(document: Manifest) -> dict[str, dict[str, Any]]:
    spec = pod_spec_of(document)
    return {c["name"]: c for c in spec["containers"] + spec.get("initContainers", [])}


def _injected(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    documents: list[Manifest],
    *flags: str,
) -> list[Manifest]:
    status, out, err = run_inject(monkeypatch, capsys, documents, *flags)
    assert status == 0, err
    return load(out)


def test_envoy_config_is_the_template_rendered_for_the_pods_ports_and_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = _injected(monkeypatch, capsys, [deployment(port=3000)], "--listen-port", "8000")
    [configmap] = by_kind(documents, "ConfigMap")
    assert configmap["metadata"] == {
        "name": "orders-opa-sidecar-envoy",
        "namespace": "shop",
        "labels": {"app.kubernetes.io/managed-by": "opa-sidecar-inject", "opa-sidecar/workload": "orders"},
    }
    text = configmap["data"]["envoy.yaml"]
    sidecar = "unix:///run/opa-sidecar/authz.sock"
    assert text == render_envoy(
        EnvoyAddresses(listen="0.0.0.0:8000", upstream="127.0.0.1:3000", sidecar=sidecar)
    )
    config = EnvoyConfig.load(text)
    assert config.ext_authz["failure_mode_allow"] is False
    assert (config.listen_address, config.upstream_address) == ("0.0.0.0:8000", "127.0.0.1:3000")
    [workload] = by_kind(documents, "Deployment")
    containers = _containers(workload)
    assert str(sidecar_settings(containers["opa-sidecar"]["args"]).grpc_addr) == config.sidecar_address
    # The socket's volume is Envoy's and the sidecar's alone; Envoy runs with the socket's group.
    socket_dir = config.sidecar_address.removeprefix("unix://").rpartition("/")[0]
    mounting = {
        name: mount
        for name, c in containers.items()
        for mount in c.get("volumeMounts", [])
        if mount["name"] == "opa-sidecar-socket"
    }
    assert mounting.keys() == {"opa-sidecar", "opa-sidecar-envoy"}
    assert {m["mountPath"] for m in mounting.values()} == {socket_dir}
    assert mounting["opa-sidecar-envoy"]["readOnly"] is True
    sidecar_context = containers["opa-sidecar"]["securityContext"]
    assert containers["opa-sidecar-envoy"]["securityContext"]["runAsGroup"] == sidecar_context["runAsGroup"]
    envoy = containers["opa-sidecar-envoy"]
    assert envoy["ports"] == [{"name": "http", "containerPort": 8000}]
    [mount] = [m for m in envoy["volumeMounts"] if m["name"] == "opa-sidecar-envoy-config"]
    assert envoy["args"][envoy["args"].index("--config-path") + 1] == f"{mount['mountPath']}/envoy.yaml"
    [volume] = [v for v in pod_spec_of(workload)["volumes"] if v["name"] == "opa-sidecar-envoy-config"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    validate_envoy_config(path)


def test_envoy_takes_the_application_ports_name_and_probes_use_its_number(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = _injected(monkeypatch, capsys, [deployment()])
    [workload] = by_kind(documents, "Deployment")
    app = _containers(workload)["app"]
    assert "ports" not in app  # the name now belongs to Envoy's port
    assert app["readinessProbe"]["httpGet"]["port"] == 8080
    assert app["livenessProbe"]["tcpSocket"]["port"] == 8080
    assert _containers(workload)["opa-sidecar-envoy"]["ports"][0]["name"] == "http"
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"team": "shop", "opa-sidecar/app-port": "8080", "opa-sidecar/injected": "envoy"}
    # An unnamed port: Envoy's is named http.
    documents = _injected(monkeypatch, capsys, [deployment(port_name=None)])
    envoy = _containers(by_kind(documents, "Deployment")[0])["opa-sidecar-envoy"]
    assert envoy["ports"][0]["name"] == "http"


@pytest.mark.parametrize("target", [8080, "8080", "http"])
def test_the_workloads_service_targets_envoy(
    target: int | str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = service("orders", "other", 8080)
    other_app = service("billing", "shop", 8080)
    documents = _injected(
        monkeypatch, capsys, [deployment(), service("orders", "shop", target), elsewhere, other_app]
    )
    ours, theirs, other = by_kind(documents, "Service")
    assert ours["spec"]["ports"] == [{"name": "web", "port": 80, "targetPort": "http"}]
    assert theirs == service("orders", "other", 8080)
    assert other == service("billing", "shop", 8080)


def test_network_policy_admits_envoys_listener_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [policy] = by_kind(_injected(monkeypatch, capsys, [pod()]), "NetworkPolicy")
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "debug-api"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": 10000}]}],
    }


def _reference_containers() -> dict[str, dict[str, Any]]:
    [deployment_file] = [
        d
        for d in yaml.safe_load_all((DEPLOY_DIR / "kubernetes" / "deployment.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    return {c["name"]: c for c in deployment_file["spec"]["template"]["spec"]["containers"]}


def test_containers_are_locked_down_as_in_deploy_kubernetes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    containers = _containers(by_kind(_injected(monkeypatch, capsys, [deployment()]), "Deployment")[0])
    reference = _reference_containers()
    for ours, theirs in (
        ("opa-sidecar-envoy", "envoy"),
        ("opa-sidecar", "opa-sidecar"),
        ("opa-sidecar-opa", "opa"),
    ):
        container, expected = containers[ours], reference[theirs]
        assert container["restartPolicy"] == "Always", "a native sidecar: a Job still completes"
        assert container["image"] == expected["image"]
        assert container["resources"] == expected["resources"]
        context = dict(container["securityContext"])
        assert context.pop("runAsNonRoot") is True
        expected_context = dict(expected["securityContext"])
        if ours == "opa-sidecar-envoy":  # Envoy's group is the sidecar's, to open its socket
            expected_context["runAsGroup"] = containers["opa-sidecar"]["securityContext"]["runAsGroup"]
        assert context == expected_context
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe].keys() == expected[probe].keys(), (ours, probe)
    assert containers["opa-sidecar-opa"]["args"] == reference["opa"]["args"]
    sidecar = sidecar_settings(containers["opa-sidecar"]["args"])
    shipped = sidecar_settings(reference["opa-sidecar"]["args"])
    for setting in ("opa_url", "http_addr", "probe_addr", "opa_timeout", "unix_socket_mode"):
        assert getattr(sidecar, setting) == getattr(shipped, setting), setting
    assert str(sidecar.grpc_addr).startswith("unix:///")
    assert f"--addr={host_port(str(sidecar.opa_url))}" in containers["opa-sidecar-opa"]["args"]


def test_images_resources_and_a_bundle_are_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [
        "--image",
        "opa=registry.example.com/opa:1.22.4",
        "--image",
        "opa-sidecar=registry.example.com/opa-sidecar@sha256:" + "a" * 64,
        "--resource",
        "envoy.limits.cpu=2",
        "--resource",
        "opa.requests.memory=256Mi",
        "--bundle-url",
        "https://bundles.example.com/authz/bundle.tar.gz",
    ]
    workload = by_kind(_injected(monkeypatch, capsys, [deployment()], *flags), "Deployment")[0]
    containers = _containers(workload)
    assert containers["opa-sidecar-opa"]["image"] == "registry.example.com/opa:1.22.4"
    assert containers["opa-sidecar"]["image"].endswith("@sha256:" + "a" * 64)
    assert containers["opa-sidecar-envoy"]["resources"]["limits"] == {"cpu": "2", "memory": "256Mi"}
    assert containers["opa-sidecar-opa"]["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    opa = containers["opa-sidecar-opa"]
    assert opa["args"][-3:] == [
        "--set=services.policy.url=https://bundles.example.com",
        "--set=bundles.authz.service=policy",
        "--set=bundles.authz.resource=authz/bundle.tar.gz",
    ]
    assert "volumeMounts" not in opa
    assert opa["readinessProbe"]["httpGet"]["path"] == "/health?bundles"  # ready once the bundle is active
    assert "opa-sidecar-policy" not in [v["name"] for v in pod_spec_of(workload)["volumes"]]


def test_policy_configmap_keys_go_back_to_their_directories(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The opa-policy ConfigMap `python -m deploy.render` writes keeps `envoy/data.json` as
    `envoy__data.json`; given in the input, the volume puts each key back at its path."""
    [policy] = [
        d
        for d in yaml.safe_load_all((DEPLOY_DIR / "kubernetes" / "configmaps.yaml").read_text())
        if d["metadata"]["name"] == "opa-policy"
    ]
    workload = by_kind(_injected(monkeypatch, capsys, [deployment(), policy]), "Deployment")[0]
    [volume] = [v for v in pod_spec_of(workload)["volumes"] if v["name"] == "opa-sidecar-policy"]
    assert {item["key"]: item["path"] for item in volume["configMap"]["items"]} == {
        key: key.replace("__", "/") for key in policy["data"]
    }
    named = by_kind(
        _injected(monkeypatch, capsys, [deployment()], "--policy-configmap", "rules"), "Deployment"
    )
    [volume] = [v for v in pod_spec_of(named[0])["volumes"] if v["name"] == "opa-sidecar-policy"]
    assert volume == {"name": "opa-sidecar-policy", "configMap": {"name": "rules"}}


def test_a_chosen_port_among_several(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    two = deployment()
    pod_spec_of(two)["containers"][0]["ports"].append({"name": "admin", "containerPort": 9000})
    workload = by_kind(_injected(monkeypatch, capsys, [two], "--port", "admin"), "Deployment")[0]
    assert _containers(workload)["app"]["ports"] == [{"containerPort": 8080, "name": "http"}]
    assert _containers(workload)["opa-sidecar-envoy"]["ports"][0]["name"] == "admin"


def test_istio_mode_writes_the_provider_the_policy_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mesh_file = tmp_path / "mesh.yaml"
    documents = _injected(
        monkeypatch, capsys, [deployment()], "--mode", "istio", "--mesh-config-out", str(mesh_file)
    )
    [policy] = by_kind(documents, "AuthorizationPolicy")
    [entry] = by_kind(documents, "ServiceEntry")
    mesh = yaml.safe_load(mesh_file.read_text())["meshConfig"]
    assert mesh["pathNormalization"] == {"normalization": "DECODE_AND_MERGE_SLASHES"}
    [provider] = mesh["extensionProviders"]
    assert policy["spec"]["provider"]["name"] == provider["name"]
    assert policy["spec"]["rules"] == [{}]
    assert policy["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "orders"}
    grpc = provider["envoyExtAuthzGrpc"]
    assert entry["spec"]["hosts"] == [grpc["service"]]
    assert entry["spec"]["ports"][0]["number"] == grpc["port"]
    workload = by_kind(documents, "Deployment")[0]
    sidecar = sidecar_settings(_containers(workload)["opa-sidecar"]["args"])
    assert f"{entry['spec']['endpoints'][0]['address']}:{grpc['port']}" == str(sidecar.grpc_addr)
    assert grpc["failOpen"] is False
    assert float(grpc["timeout"].removesuffix("s")) >= sidecar.opa_timeout + 0.1
    # Istio intercepts every port: the application's ports stay as they were.
    assert _containers(workload)["app"]["ports"] == [{"containerPort": 8080, "name": "http"}]


def test_files_are_read_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sidecar.cli import main

    first = write(tmp_path / "a.yaml", [deployment("a")])
    second = write(tmp_path / "b.yaml", [service("b", "shop", 8080), deployment("b")])
    assert main(["inject", str(first), str(second)]) == 0
    documents = load(capsys.readouterr().out)
    assert [f"{d['kind']}/{d['metadata']['name']}" for d in documents[:3]] == [
        "Deployment/a",
        "Service/b",
        "Deployment/b",
    ]
    assert by_kind(documents, "Service")[0]["spec"]["ports"][0]["targetPort"] == "http"
    assert main(["inject", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read" in capsys.readouterr().err


def test_workloads_sharing_a_template_through_a_yaml_alias_each_get_their_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # YAML aliases reach within one document: here, a List.
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: blue}
  spec:
    selector: {matchLabels: {app: shop}}
    template: &pod
      metadata: {labels: {app: shop}}
      spec:
        containers:
        - {name: app, image: "ghcr.io/example/shop:1.0", ports: [{name: http, containerPort: 8080}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: green}
  spec:
    selector: {matchLabels: {app: shop}}
    template: *pod
"""
    status, out, err = run_inject(monkeypatch, capsys, text)
    assert status == 0, err
    documents = load(out)
    volumes = [
        next(
            v["configMap"]["name"]
            for v in pod_spec_of(d)["volumes"]
            if v["name"] == "opa-sidecar-envoy-config"
        )
        for d in by_kind(documents, "Deployment")
    ]
    assert volumes == ["blue-opa-sidecar-envoy", "green-opa-sidecar-envoy"]
    assert [d["metadata"]["name"] for d in by_kind(documents, "ConfigMap")] == volumes
