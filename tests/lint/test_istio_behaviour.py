"""What an Istio configuration leaves Envoy with, run on Envoy 1.40: the HTTP
filters istiod generates for a CUSTOM policy (an RBAC filter whose shadow rules
mark the requests to check, then ext_authz switched on by that mark), as a
policy or an EnvoyFilter patch leaves them. istiod itself cannot run here; the
filters follow its authz builder (RBAC_DENY shadow rules under the stat prefix
istio_ext_authz_, filter_enabled_metadata on shadow_effective_policy_id with
the prefix istio-ext-authz). The sidecar denies every check."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.sidecar import running_sidecar
from tests.lint.helpers import FIXTURES, lint
from tests.lint.test_envoy_behaviour import _get, cluster, running_envoy

RBAC = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
POLICY = "istio-ext-authz-ns[app]-policy[ext-authz]-rule[0]"
ANY_PRINCIPAL = [{"any": True}]
NEVER = {"permissions": [{"not_rule": {"any": True}}], "principals": ANY_PRINCIPAL}  # a policy without rules


def shadow_rbac(policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": RBAC,
        "typed_config": {
            "@type": RBAC_TYPE,
            "shadow_rules": {"action": "DENY", "policies": {POLICY: policy}},
            "shadow_rules_stat_prefix": "istio_ext_authz_",
        },
    }


def ext_authz(cluster_name: str = "opa_sidecar", **settings: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": AUTHZ_TYPE,
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}, "timeout": "0.5s"},
            "filter_enabled_metadata": {
                "filter": RBAC,
                "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
                "value": {"string_match": {"prefix": "istio-ext-authz"}},
            },
            **settings,
        },
    }


EVERY_REQUEST = {"permissions": [{"any": True}], "principals": ANY_PRINCIPAL}
# when: [{key: request.headers[x-check], values: ["1"]}]: istiod matches the header on the principal.
ON_HEADER = {
    "permissions": [{"any": True}],
    "principals": [{"header": {"name": "x-check", "string_match": {"exact": "1"}}}],
}

# listener -> (HTTP filters before the router, [(headers, status Envoy 1.40 answers)])
CASES: dict[str, tuple[list[dict[str, Any]], list[tuple[dict[str, str], int]]]] = {
    "control": ([shadow_rbac(EVERY_REQUEST), ext_authz()], [({}, 403)]),
    "client_header": ([shadow_rbac(ON_HEADER), ext_authz()], [({"x-check": "1"}, 403), ({}, 200)]),
    "no_rules": ([shadow_rbac(NEVER), ext_authz()], [({}, 200)]),
    "rbac_removed": ([ext_authz()], [({}, 200)]),
    "closed_unreachable": ([shadow_rbac(EVERY_REQUEST), ext_authz("nowhere")], [({}, 403)]),
    "merged_fail_open": (
        [shadow_rbac(EVERY_REQUEST), ext_authz("nowhere", failure_mode_allow=True)], [({}, 200)]
    ),
}  # fmt: skip


def listener(name: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "app"}}}
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM_TYPE,
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [route]}]
                            },
                            "http_filters": [
                                *copy.deepcopy(filters),
                                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
                            ],
                        },
                    }
                ]
            }
        ],
    }


def bootstrap(sidecar_port: int) -> str:
    config = {
        "static_resources": {
            "listeners": [listener(name, filters) for name, (filters, _) in CASES.items()],
            "clusters": [cluster("opa_sidecar", sidecar_port), cluster("nowhere", 1)],
        }
    }
    return yaml.safe_dump(config)


def test_the_linter_reports_each_case_that_lets_requests_through() -> None:
    found = {
        (Path(f.file).name, f.document, f.rule)
        for f in lint(FIXTURES / "istio/custom-exemptions.yaml", FIXTURES / "istio/envoyfilter-patches.yaml",
                      FIXTURES / "istio/authorization-policies.yaml").findings
    }  # fmt: skip
    assert ("custom-exemptions.yaml", 0, "custom-policy-client-exemption") in found  # client_header
    assert ("authorization-policies.yaml", 0, "custom-policy-no-rules") in found  # no_rules
    assert ("envoyfilter-patches.yaml", 1, "envoyfilter-removes-ext-authz") in found  # rbac_removed
    assert ("envoyfilter-patches.yaml", 2, "failure-mode-allow") in found  # merged_fail_open


async def test_istiod_style_custom_filters_on_envoy(tmp_path: Path) -> None:
    async with running_sidecar("http://127.0.0.1:1") as sidecar:  # no OPA: every check is denied
        async with running_envoy(bootstrap(sidecar.sidecar.grpc_port), tmp_path) as ports:
            seen = {
                name: [(headers, (await asyncio.to_thread(_get, ports[name], "/", headers))[0])
                       for headers, _ in requests]
                for name, (_, requests) in CASES.items()
            }  # fmt: skip
        decisions = sidecar.decisions()
    assert seen == {name: requests for name, (_, requests) in CASES.items()}
    # Asked: the control, and the request that carried the header; nothing else reached the sidecar.
    assert [(d["outcome"], d["reason"]) for d in decisions] == [("deny", "opa_unreachable")] * 2
