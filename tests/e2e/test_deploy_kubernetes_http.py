"""deploy/kubernetes-http, the HTTP-mode variant of deploy/kubernetes, built as kustomize
builds it (its base, then its patches): it differs from the base in Envoy's configuration
and the sidecar's --http-addr only, validates against the Kubernetes schemas, and Envoy
and the sidecar agree on the socket, which only they can reach."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.render import DEPLOY_DIR, KUBERNETES_HTTP_ENVOY_VARIANT
from tests.e2e.deploy_files import EnvoyConfig, sidecar_settings, validate_envoy_config

OVERLAY = DEPLOY_DIR / "kubernetes-http"
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
Document = dict[str, Any]


def _documents(directory: Path) -> list[Document]:
    """Every document of a kustomization's resources (files, or directories built in turn)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents: list[Document] = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        if path.is_dir():
            documents += _built(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def _built(directory: Path) -> list[Document]:
    documents = _documents(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            _merge_patch(documents, yaml.safe_load((directory / patch["path"]).read_text()))
        else:
            _json_patch(documents, patch["target"], yaml.safe_load(patch["patch"]))
    return documents


def _merge_patch(documents: list[Document], patch: Document) -> None:
    """A strategic merge patch of a ConfigMap: its data keys replace the target's."""
    assert patch["kind"] == "ConfigMap", "only ConfigMap merge patches are expected here"
    [target] = [
        d for d in documents if (d["kind"], d["metadata"]["name"]) == ("ConfigMap", patch["metadata"]["name"])
    ]
    target["data"].update(patch["data"])


def _json_patch(documents: list[Document], target: Document, operations: list[Document]) -> None:
    [document] = [
        d for d in documents if (d["kind"], d["metadata"]["name"]) == (target["kind"], target["name"])
    ]
    for operation in operations:
        *parents, last = operation["path"].lstrip("/").split("/")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if operation["op"] == "test":
            assert node[key] == operation["value"], f"kustomize would refuse the patch at {operation['path']}"
        else:
            assert operation["op"] == "replace"
            node[key] = operation["value"]


@pytest.fixture(scope="module")
def base() -> dict[str, Document]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in _documents(DEPLOY_DIR / "kubernetes")}


@pytest.fixture(scope="module")
def overlay() -> dict[str, Document]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in _built(OVERLAY)}


def _pod(manifests: dict[str, Document]) -> Document:
    spec: Document = manifests["Deployment/opa-sidecar-demo"]["spec"]["template"]["spec"]
    return spec


def _container(manifests: dict[str, Document], name: str) -> Document:
    [container] = [c for c in _pod(manifests)["containers"] if c["name"] == name]
    return dict(container)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlay_matches_the_kubernetes_schemas(version: str, overlay: dict[str, Document]) -> None:
    for name, document in overlay.items():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)} (Kubernetes {version})")


def test_envoy_runs_the_http_mode_config_which_validates(
    overlay: dict[str, Document], tmp_path: Path
) -> None:
    text = overlay["ConfigMap/envoy-config"]["data"]["envoy.yaml"]
    assert text == (DEPLOY_DIR / KUBERNETES_HTTP_ENVOY_VARIANT).read_text()
    config = EnvoyConfig.load(text)
    assert "http_service" in config.ext_authz and config.ext_authz["failure_mode_allow"] is False
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    validate_envoy_config(path)


def test_envoy_and_the_sidecar_agree_on_a_socket_only_they_mount(overlay: dict[str, Document]) -> None:
    config = EnvoyConfig.load(overlay["ConfigMap/envoy-config"]["data"]["envoy.yaml"])
    cluster = config.ext_authz["http_service"]["server_uri"]["cluster"]
    sidecar = sidecar_settings(_container(overlay, "opa-sidecar")["args"])
    assert str(sidecar.http_addr) == config.cluster_address(cluster)
    socket_dir = str(sidecar.http_addr).removeprefix("unix://").rpartition("/")[0]
    mounting = {
        c["name"]
        for c in _pod(overlay)["containers"]
        for mount in c.get("volumeMounts", [])
        if mount["mountPath"] == socket_dir
    }
    assert mounting == {"envoy", "opa-sidecar"}


def test_overlay_changes_nothing_else(base: dict[str, Document], overlay: dict[str, Document]) -> None:
    expected = copy.deepcopy(base)
    expected["ConfigMap/envoy-config"]["data"] = overlay["ConfigMap/envoy-config"]["data"]
    args = _container(expected, "opa-sidecar")["args"]
    args[args.index("--http-addr") + 1] = _container(overlay, "opa-sidecar")["args"][
        args.index("--http-addr") + 1
    ]
    assert overlay == expected
    assert overlay["ConfigMap/envoy-config"] != base["ConfigMap/envoy-config"]


def test_a_patch_that_no_longer_fits_is_refused(base: dict[str, Document]) -> None:
    """The check above can fail: the `test` operation stops a patch aimed at a moved argument."""
    moved = copy.deepcopy(list(base.values()))
    [deployment] = [d for d in moved if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][2]["args"].insert(0, "--log-level=info")
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    [patch] = [p for p in kustomization["patches"] if "target" in p]
    with pytest.raises(AssertionError, match="kustomize would refuse"):
        _json_patch(moved, patch["target"], yaml.safe_load(patch["patch"]))
