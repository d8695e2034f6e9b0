"""Places the linter must walk and envelopes it must open, each on a small
config: the finding appears where the setting is, and not without it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.lint.helpers import lint

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
ROUTE: dict[str, Any] = {"match": {"prefix": "/"}, "route": {"cluster": "app"}}


def authz(**settings: Any) -> dict[str, Any]:
    config = {"@type": AUTHZ_TYPE, "grpc_service": {"envoy_grpc": {"cluster_name": "sidecar"}}, **settings}
    return {"name": "envoy.filters.http.ext_authz", "typed_config": config}


def bootstrap(hcm: dict[str, Any], **root: Any) -> dict[str, Any]:
    listener = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {"@type": HCM_TYPE, **hcm}}]}],
    }
    return {"static_resources": {"listeners": [listener]}, **root}


def rules(config: dict[str, Any], tmp_path: Path) -> set[str]:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    return {f.rule for f in lint(path).findings}


def test_a_route_picked_by_a_virtual_host_matcher_is_a_route(tmp_path: Path) -> None:
    route = {"@type": "type.googleapis.com/envoy.config.route.v3.Route", **ROUTE}
    matcher = {"matcher_list": {"matchers": [{"on_match": {"action": {"name": "r", "typed_config": route}}}]}}
    vhost = {"name": "v", "domains": ["*"], "matcher": matcher}
    hcm: dict[str, Any] = {"route_config": {"virtual_hosts": [vhost]}, "http_filters": [ROUTER]}
    assert "missing-ext-authz" in rules(bootstrap(hcm), tmp_path)
    disabled = copy.deepcopy(hcm)
    disabled["http_filters"] = [{**authz(), "disabled": True}, ROUTER]
    assert "ext-authz-disabled-by-default" in rules(bootstrap(disabled), tmp_path)


def test_an_ext_authz_in_an_xds_typed_struct_with_json_names(tmp_path: Path) -> None:
    wrapped = {
        "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
        "typeUrl": AUTHZ_TYPE,
        "value": {"grpcService": {"envoyGrpc": {"clusterName": "sidecar"}}, "failureModeAllow": "Y"},
    }
    hcm: dict[str, Any] = {
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [ROUTE]}]}
    }
    hcm["http_filters"] = [{"name": "authz", "typed_config": wrapped}, ROUTER]
    assert "failure-mode-allow" in rules(bootstrap(hcm), tmp_path)


def test_a_header_removed_for_some_requests_only_is_not_removed(tmp_path: Path) -> None:
    response = {"allowed_upstream_headers": {"patterns": [{"exact": "x-user"}]}}
    http_authz = authz(http_service={"server_uri": {"uri": "http://a", "cluster": "a", "timeout": "1s"},
                                     "authorization_response": response})  # fmt: skip
    http_authz["typed_config"].pop("grpc_service")
    mutation = {
        "name": "strip",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": "x-user"}]},
        },
    }
    routes = [ROUTE]
    hcm: dict[str, Any] = {
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]}
    }
    hcm["http_filters"] = [mutation, http_authz, ROUTER]
    assert "forgeable-upstream-header" not in rules(bootstrap(hcm), tmp_path)
    skipped: dict[str, Any] = {**ROUTE, "match": {"prefix": "/raw"}}
    skipped["typed_per_filter_config"] = {
        "strip": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    }
    routes.insert(0, skipped)
    assert "forgeable-upstream-header" in rules(bootstrap(hcm), tmp_path)


def test_an_upgrade_switched_off_by_a_string_is_off(tmp_path: Path) -> None:
    upgrade = {"upgrade_type": "websocket", "filters": [ROUTER]}
    hcm: dict[str, Any] = {
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [ROUTE]}]}
    }
    hcm["http_filters"] = [authz(), ROUTER]
    hcm["upgrade_configs"] = [upgrade]
    assert "upgrade-without-ext-authz" in rules(bootstrap(hcm), tmp_path)
    upgrade["enabled"] = "false"
    assert "upgrade-without-ext-authz" not in rules(bootstrap(hcm), tmp_path)


def test_a_static_runtime_layer_that_lowers_filter_enabled(tmp_path: Path) -> None:
    enabled = {"runtime_key": "authz.on", "default_value": {"numerator": 100}}
    hcm: dict[str, Any] = {
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [ROUTE]}]}
    }
    hcm["http_filters"] = [authz(filter_enabled=enabled), ROUTER]
    lowered = {"layered_runtime": {"layers": [{"name": "s", "static_layer": {"authz": {"on": 10}}}]}}
    assert "filter-disabled-fraction" in rules(bootstrap(hcm, **lowered), tmp_path)
    assert "filter-disabled-fraction" not in rules(bootstrap(hcm), tmp_path)


def test_network_ext_authz_with_metadata_enablement(tmp_path: Path) -> None:
    network = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
        "stat_prefix": "n",
        "filterEnabledMetadata": {"filter": "f", "path": [{"key": "k"}], "value": {"present_match": True}},
    }
    tcp = {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}
    config = bootstrap({})
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"] = [
        {"name": "authz", "typed_config": network},
        {"name": "tcp", "typed_config": {**tcp, "stat_prefix": "t", "cluster": "app"}},
    ]
    assert rules(config, tmp_path) == {"filter-enabled-metadata"}
