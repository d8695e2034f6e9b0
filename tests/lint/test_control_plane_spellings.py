"""Each fail-open setting of Istio and Envoy Gateway written in every spelling
their control planes read: the same finding for each true spelling, none for
the false ones, and not-verified where the control plane refuses the value
(istiod drops the mesh config or the patch; the API server refuses the
resource). Written as YAML text, so quoting is exactly what a user writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lint.helpers import lint

# go-yaml v2 (YAML 1.1) reads these unquoted words as true, then jsonpb or the CRD schema takes them.
TRUE = ["true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y"]
FALSE = ["false", "False", "no", "NO", "off", "n", "N"]
# Strings: Envoy would read some of them as true, but jsonpb and CRD schemas refuse a string for a bool.
REFUSED = ['"true"', '"yes"', '"1"', '"t"', "'on'"]

MESH_WRAPPERS = {
    "mesh": "{body}",
    "configmap": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\n"
        "data:\n  mesh: |-\n{indented}"
    ),
    "istio-operator": (
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n{indented}"
    ),
    "helm-values": "meshConfig:\n{indented}",
}
PROVIDER_KEYS = [
    ("extensionProviders", "envoyExtAuthzGrpc", "failOpen"),
    ("extension_providers", "envoy_ext_authz_grpc", "fail_open"),
    ("extensionProviders", "envoyExtAuthzHttp", "fail_open"),
    ("extension_providers", "envoyExtAuthzHttp", "failOpen"),
]


def mesh_text(wrapper: str, keys: tuple[str, str, str], value: str) -> str:
    providers, kind, fail_open = keys
    body = (
        f"{providers}:\n- name: opa\n  {kind}:\n    service: authz/opa-sidecar\n    port: 9191\n"
        f'    timeout: 250ms\n    statusOnError: "503"\n    {fail_open}: {value}\n'
    )
    indented = "".join(f"    {line}\n" for line in body.splitlines())
    return MESH_WRAPPERS[wrapper].format(body=body, indented=indented)


def rules_at(path: Path, text: str, key: str) -> set[str]:
    path.write_text(text)
    result = lint(path)
    assert not result.errors
    return {f.rule for f in result.findings if f.path.endswith(f"/{key}")}


@pytest.mark.parametrize("wrapper", sorted(MESH_WRAPPERS))
def test_istio_fail_open_in_every_spelling_istiod_reads(tmp_path: Path, wrapper: str) -> None:
    seen = {}
    for keys in PROVIDER_KEYS:
        for value in TRUE + FALSE + REFUSED:
            seen[(keys[2], keys[0], value)] = rules_at(
                tmp_path / "mesh.yaml", mesh_text(wrapper, keys, value), keys[2]
            )
    expected = {
        key: {"istio-fail-open"} if key[2] in TRUE else {"not-verified"} if key[2] in REFUSED else set()
        for key in seen
    }
    assert seen == expected
    assert len(seen) == len(PROVIDER_KEYS) * 23


def test_istio_the_json_name_wins_when_both_are_written(tmp_path: Path) -> None:
    provider = (
        "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    timeout: 1s\n    statusOnError: '503'\n"
    )
    for first, second, fail_open in [("failOpen: true", "fail_open: false", True),
                                     ("fail_open: false", "failOpen: true", True),
                                     ("failOpen: false", "fail_open: true", False),
                                     ("fail_open: true", "failOpen: false", False)]:  # fmt: skip
        path = tmp_path / "mesh.yaml"
        path.write_text(f"{provider}    {first}\n    {second}\n")
        rules = {f.rule for f in lint(path).findings}
        assert ("istio-fail-open" in rules) is fail_open, (first, second)
        assert "duplicate-key" in rules


@pytest.mark.parametrize("key", ["statusOnError", "status_on_error"])
def test_istio_success_status_in_both_spellings(tmp_path: Path, key: str) -> None:
    text = f"extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    timeout: 1s\n    {key}: '200'\n"
    assert rules_at(tmp_path / "mesh.yaml", text, key) == {"status-on-error-2xx"}
    number = text.replace("'200'", "200")  # a number in a string field: istiod refuses the mesh config
    assert rules_at(tmp_path / "mesh.yaml", number, key) == {"not-verified"}


def envoy_filter(key: str, value: str) -> str:
    return f"""apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: patch, namespace: istio-system}}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {{name: envoy.filters.http.ext_authz}}
    patch:
      operation: MERGE
      value:
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
          {key}: {value}
  - applyTo: HTTP_ROUTE
    match: {{context: SIDECAR_INBOUND}}
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.ext_authz:
            "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
            disabled: {value}
"""


@pytest.mark.parametrize("key", ["failure_mode_allow", "failureModeAllow"])
def test_envoy_filter_fail_open_in_every_spelling_istiod_applies(tmp_path: Path, key: str) -> None:
    path = tmp_path / "patch.yaml"
    for value in TRUE + FALSE + REFUSED:
        path.write_text(envoy_filter(key, value))
        found = {(f.rule, f.path.rsplit("/", 1)[-1]) for f in lint(path).findings}
        if value in TRUE:
            assert found == {("failure-mode-allow", key), ("per-route-disabled", "disabled")}, value
        elif value in REFUSED and value != "'on'":
            assert found == {("not-verified", key), ("not-verified", "disabled")}, value
        else:  # false, or "on", which neither Envoy nor istiod reads as true
            assert found == set(), value


def security_policy(key: str, value: str) -> str:
    return f"""apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: authz, namespace: app}}
spec:
  targetRefs:
  - {{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}
  extAuth:
    grpc:
      backendRefs:
      - {{name: opa-sidecar, port: 9191}}
    timeout: 250ms
    statusOnError: 503
    {key}: {value}
"""


def test_gateway_fail_open_in_every_spelling_the_api_server_reads(tmp_path: Path) -> None:
    seen = {value: rules_at(tmp_path / "policy.yaml", security_policy("failOpen", value), "failOpen")
            for value in TRUE + FALSE + REFUSED}  # fmt: skip
    assert seen == {
        value: {"gateway-fail-open"} if value in TRUE else {"not-verified"} if value in REFUSED else set()
        for value in seen
    }
    # The CRD schema knows camelCase names only: the API server drops fail_open.
    for value in TRUE:
        assert rules_at(tmp_path / "policy.yaml", security_policy("fail_open", value), "fail_open") == set()


GATEWAY_TIMEOUTS = [
    ("250ms", set()),
    ("1s", set()),
    ("100ms", {"timeout-below-budget"}),
    ("0.25s", {"invalid-timeout"}),
    ("250", {"invalid-timeout"}),
]


@pytest.mark.parametrize(("timeout", "rules"), GATEWAY_TIMEOUTS)
def test_gateway_timeouts_are_gateway_api_durations(tmp_path: Path, timeout: str, rules: set[str]) -> None:
    text = security_policy("failOpen", "false").replace("timeout: 250ms", f"timeout: {timeout}")
    assert rules_at(tmp_path / "policy.yaml", text, "timeout") == rules
