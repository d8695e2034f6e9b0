"""Every manifest of the corpus, injected in both modes: valid for Kubernetes 1.30 and
1.37, clean for `opa-sidecar lint`, unchanged by a second run, and everything that is
not a workload or its Service passed through as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sidecar.inject.workloads import TEMPLATE_PATHS
from sidecar.lint.envoy import ENVOY
from sidecar.lint.istio import MESH_CONFIG
from sidecar.lint.istio_policy import AUTHORIZATION_POLICY
from sidecar.lint.linter import lint_paths
from sidecar.lint.report import render_text
from sidecar.lint.sidecar_settings import DEFAULT_ENVOY_MAX_REQUEST_BYTES, SidecarSettings
from sidecar.lint.timeouts import Budget
from tests.inject.corpus import copied, passthrough, workloads
from tests.inject.helpers import by_kind, load, pod_spec_of, run_inject

KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# Istio's kinds have no schema in kubernetes-validate; the linter reads them instead.
ISTIO_KINDS = {"AuthorizationPolicy", "ServiceEntry"}
CORPUS = workloads()


def _inject(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, *flags: str
) -> str:
    status, out, err = run_inject(monkeypatch, capsys, copied(CORPUS[name]), *flags)
    assert status == 0, err
    assert err == ""
    return out


def _mode_flags(mode: str, tmp_path: Path) -> list[str]:
    if mode == "istio":
        return ["--mode", "istio", "--mesh-config-out", str(tmp_path / "mesh.yaml")]
    return []


@pytest.mark.parametrize("mode", ["envoy", "istio"])
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_output_validates_lints_clean_and_is_idempotent(
    name: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _mode_flags(mode, tmp_path)
    out = _inject(monkeypatch, capsys, name, *flags)
    documents = load(out)
    for document in documents:
        for item in document.get("items", [document]) if document["kind"] == "List" else [document]:
            if item["kind"] in ISTIO_KINDS:
                continue
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(item, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{item['kind']}: {exc.message} at {list(exc.path)} (Kubernetes {version})")

    (tmp_path / "out.yaml").write_text(out)
    result = lint_paths(
        [str(p) for p in sorted(tmp_path.glob("*.yaml"))],
        SidecarSettings(Budget(0.15), DEFAULT_ENVOY_MAX_REQUEST_BYTES),
    )
    assert not result.errors, result.errors
    assert [f for f in result.findings if f.severity.fails] == [], render_text(result)
    checked = {kind for c in result.checked for kind in c.kinds}
    assert checked >= ({ENVOY} if mode == "envoy" else {AUTHORIZATION_POLICY, MESH_CONFIG}), checked

    # Running it again on its own output changes nothing.
    again_status, again, err = run_inject(monkeypatch, capsys, out, *flags)
    assert again_status == 0, err
    assert again == out

    workloads_out = [d for kind in TEMPLATE_PATHS for d in by_kind(documents, kind)]
    assert workloads_out
    for workload in workloads_out:
        names = [c["name"] for c in pod_spec_of(workload)["initContainers"]]
        expected = ["opa-sidecar-opa", "opa-sidecar"] + (["opa-sidecar-envoy"] if mode == "envoy" else [])
        assert names[: len(expected)] == expected
        assert names[len(expected) :] == ["migrate"], "the workload's own init containers run after"


def test_other_kinds_pass_through_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = load(_inject(monkeypatch, capsys, "multi-document"))
    assert documents[: len(passthrough())] == passthrough()


def test_companions_per_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    envoy = load(_inject(monkeypatch, capsys, "multi-document"))
    kinds = [d["kind"] for d in envoy]
    # Three workloads: each gets its Envoy ConfigMap and its NetworkPolicy.
    assert kinds.count("NetworkPolicy") == 3 and len(by_kind(envoy, "ConfigMap")) == 1 + 3
    istio = load(_inject(monkeypatch, capsys, "multi-document", *_mode_flags("istio", tmp_path)))
    assert [d["metadata"]["name"] for d in by_kind(istio, "AuthorizationPolicy")] == [
        "orders-opa-sidecar",
        "debug-api-opa-sidecar",
        "nightly-opa-sidecar",
    ]
    # One ServiceEntry per namespace, for the pod-local provider.
    assert [(d["metadata"]["namespace"]) for d in by_kind(istio, "ServiceEntry")] == ["shop", "batch"]
    assert by_kind(istio, "NetworkPolicy") == []
    for workload in by_kind(istio, "Deployment"):
        assert "opa-sidecar-envoy" not in str(workload)


def _listed(documents: list[dict[str, Any]]) -> list[str]:
    return [f"{d['kind']}/{d['metadata']['name']}" for d in documents]


def test_a_list_keeps_its_items_and_gets_companions_after_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = load(_inject(monkeypatch, capsys, "list"))
    assert documents[0]["kind"] == "List"
    assert _listed(documents[0]["items"]) == ["Deployment/catalog", "Service/catalog", "ReplicaSet/legacy"]
    assert _listed(documents[1:]) == [
        "ConfigMap/catalog-opa-sidecar-envoy",
        "NetworkPolicy/catalog-opa-sidecar",
        "ConfigMap/legacy-opa-sidecar-envoy",
        "NetworkPolicy/legacy-opa-sidecar",
    ]
