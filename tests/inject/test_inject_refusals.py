"""What inject will not do: exit 2, nothing on stdout, and one line per refused document
that names it and says why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.inject.corpus import Manifest, app_container, deployment, pod, service
from tests.inject.helpers import pod_spec_of, run_inject


def _spec(document: Manifest) -> dict[str, Any]:
    return pod_spec_of(document)


def _no_port(d: Manifest) -> None:
    for c in _spec(d)["containers"]:
        c.pop("ports")


def _host_network(d: Manifest) -> None:
    _spec(d)["hostNetwork"] = True


def _container_taken(d: Manifest) -> None:
    _spec(d)["containers"].append({"name": "opa-sidecar", "image": "busybox:1.36"})


def _volume_taken(d: Manifest) -> None:
    _spec(d)["volumes"].append({"name": "opa-sidecar-policy", "emptyDir": {}})


def _port_taken(d: Manifest) -> None:
    _spec(d)["containers"][0]["ports"].append({"containerPort": 8181})


def _port_name_taken(d: Manifest) -> None:
    _spec(d)["containers"][0]["ports"].append({"containerPort": 7000, "name": "authz-probe"})


def _several_ports(d: Manifest) -> None:
    _spec(d)["containers"].append(app_container("worker", 7070, "admin"))
    _spec(d)["containers"][1]["volumeMounts"] = []


def _no_labels(d: Manifest) -> None:
    d["metadata"].pop("labels", None)


def _no_pod_template(d: Manifest) -> None:
    d["spec"].pop("template")


REFUSALS: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "no declared port": (_no_port, "no container declares a TCP port"),
    "hostNetwork": (_host_network, "hostNetwork"),
    "container name taken": (_container_taken, "container name 'opa-sidecar' is already taken"),
    "volume name taken": (_volume_taken, "volume name 'opa-sidecar-policy' is already taken"),
    "port taken": (_port_taken, "declares port 8181, which the OPA API needs"),
    "port name taken": (_port_name_taken, "port name 'authz-probe' is already taken"),
    "several ports": (
        _several_ports,
        "several TCP ports (web, admin); choose the one Envoy guards with --port",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_pod_it_cannot_inject_safely_is_refused_by_name(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    change, reason = REFUSALS[case]
    broken = pod()
    change(broken)
    fine = deployment()
    status, out, err = run_inject(monkeypatch, capsys, [fine, broken])
    assert status == 2
    assert out == ""
    assert err == f"opa-sidecar inject: stdin: document 2 (Pod/debug-api): cannot inject: {_reason(err)}\n"
    assert reason in err


def _reason(err: str) -> str:
    return err.split("cannot inject: ", 1)[1].rstrip("\n")


def test_a_pod_without_labels_is_refused_since_a_selector_would_take_every_pod(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = pod()
    _no_labels(broken)
    status, out, err = run_inject(monkeypatch, capsys, [broken])
    assert (status, out) == (2, "")
    assert "document 1 (Pod/debug-api): cannot inject: its pods have no labels to select them by" in err


def test_every_refused_document_is_listed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = deployment("a"), deployment("b")
    _host_network(first)
    _no_pod_template(second)
    status, _, err = run_inject(monkeypatch, capsys, [first, deployment("c"), second])
    assert status == 2
    assert err.splitlines() == [
        "opa-sidecar inject: stdin: document 1 (Deployment/a): cannot inject: it uses hostNetwork: the "
        "authorizer's loopback ports would be the node's, open to its every pod",
        "opa-sidecar inject: stdin: document 3 (Deployment/b): cannot inject: it has no pod template at "
        "spec.template.spec",
    ]


def test_a_list_item_is_named_by_its_position(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = deployment("b")
    _no_port(broken)
    listed = {"apiVersion": "v1", "kind": "List", "items": [deployment("a"), broken]}
    status, _, err = run_inject(monkeypatch, capsys, [listed])
    assert status == 2
    assert "stdin: document 1 (List), item 2 (Deployment/b): cannot inject: no container declares" in err


def test_a_generated_name_already_used_differently_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clash = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "orders-opa-sidecar-envoy", "namespace": "shop"},
        "data": {"envoy.yaml": "mine"},
    }
    status, out, err = run_inject(monkeypatch, capsys, [deployment(), clash])
    assert (status, out) == (2, "")
    assert "ConfigMap/orders-opa-sidecar-envoy: cannot inject: the input already has a different" in err


def test_a_pod_injected_in_the_other_mode_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_inject(monkeypatch, capsys, [deployment()])
    assert status == 0
    mesh = str(tmp_path / "mesh.yaml")
    status, again, err = run_inject(monkeypatch, capsys, out, "--mode", "istio", "--mesh-config-out", mesh)
    assert (status, again) == (2, "")
    assert "(Deployment/orders): cannot inject: it was injected in 'envoy' mode, not 'istio'" in err


def test_a_marked_pod_missing_its_containers_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marked = deployment()
    marked["spec"]["template"]["metadata"]["annotations"]["opa-sidecar/injected"] = "envoy"
    status, _, err = run_inject(monkeypatch, capsys, [marked])
    assert status == 2
    assert "is annotated opa-sidecar/injected but its authorizer containers are missing" in err


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("kind: [unclosed", "stdin: not YAML"),
        ("- just\n- a list\n", "stdin: document 1: not a Kubernetes object"),
        ("apiVersion: v1\nkind: List\nitems: 3\n", "its items are not a list of objects"),
        (b"kind: Pod\nmetadata: {name: \xff}\n", "stdin: not UTF-8"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, n in zip("abcde", "bcdef", strict=True)
            ),
            "stdin: more than 1000000 values once its YAML aliases are expanded",
        ),
    ],
)
def test_input_that_is_not_kubernetes_yaml_is_refused(
    text: str | bytes, complaint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_inject(monkeypatch, capsys, text)
    assert (status, out) == (2, "")
    assert complaint in err


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--mode", "istio"], "--mode istio needs --mesh-config-out"),
        (["--image", "envoy=envoyproxy/envoy"], "pinned tag or digest"),
        (["--image", "envoy=envoyproxy/envoy:latest"], "pinned tag or digest"),
        (["--image", "app=x:1"], "ROLE one of envoy, opa-sidecar, opa"),
        (["--resource", "opa.limits.cpu=lots"], "'lots' is not a Kubernetes quantity"),
        (["--resource", "opa.cpu=1"], "write ROLE.requests.cpu=QUANTITY"),
        (["--bundle-url", "http://bundles.example.com/authz.tar.gz"], "write https://HOST/PATH"),
        (
            ["--bundle-url", "https://user:pw@bundles.example.com/a.tar.gz"],
            "no query, fragment or credentials",
        ),
        (["--listen-port", "70000"], "--listen-port '70000' is not a port number"),
        (["--port", "9999"], "no container declares the TCP port '9999' given with --port"),
    ],
)
def test_bad_options_are_refused(
    flags: list[str], complaint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_inject(
        monkeypatch, capsys, [deployment(), service("orders", "shop", 8080)], *flags
    )
    assert (status, out) == (2, "")
    assert complaint in err
