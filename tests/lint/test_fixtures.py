"""Every fixture produces exactly the findings listed here: no rule is missed,
and nothing else is reported."""

from __future__ import annotations

import re

import pytest

from sidecar.lint.findings import Severity
from sidecar.lint.rules import ALL_RULES
from tests.lint.agent_gateway_expected import AGENT_GATEWAY_EXPECTED
from tests.lint.helpers import FIXTURES, REPO, ext_authz, hcm, lint
from tests.lint.istio_gateway_expected import ISTIO_AND_GATEWAY_EXPECTED

RESPONSE = "http_service/authorization_response"
FACTS = "forwarded-facts-from-client"  # Envoy's defaults let the client write them


def client_facts(*listeners: int) -> set[tuple[int, str, str]]:
    """What Envoy's defaults leave to the client: forwarded facts and the path."""
    return {(0, FACTS, hcm(listener)) for listener in listeners} | raw_paths(*listeners)


def raw_paths(*listeners: int) -> set[tuple[int, str, str]]:
    return {(0, "path-not-normalized", hcm(listener)) for listener in listeners}


def view_route(route: int) -> str:
    return f"{hcm(1)}/route_config/virtual_hosts/0/routes/{route}/{PER_ROUTE}/check_settings"


ROUTES = f"{hcm(0)}/route_config/virtual_hosts"
TLS = "/static_resources/listeners/0/filter_chains/0/transport_socket/typed_config"
PER_ROUTE = "typed_per_filter_config/envoy.filters.http.ext_authz"

# fixture -> {(document, rule, pointer)}
EXPECTED: dict[str, set[tuple[int, str, str]]] = {
    "envoy/failure-mode-allow.yaml": {
        (0, "failure-mode-allow", f"{ext_authz(0)}/failure_mode_allow"),
        (0, "failure-mode-allow", f"{hcm(1)}/failure_mode_allow"),  # the network filter
        (0, "failure-header-without-fail-open", f"{ext_authz(2)}/failure_mode_allow_header_add"),
    }
    | client_facts(0, 2),
    "envoy/enablement.yaml": {
        (0, "shadow-mode", f"{ext_authz(0)}/shadow_mode"),
        (0, "filter-disabled-fraction", f"{ext_authz(1)}/filter_enabled"),
        (0, "filter-enabled-runtime", f"{ext_authz(2)}/filter_enabled/runtime_key"),
        (0, "filter-enabled-metadata", f"{ext_authz(3)}/filter_enabled_metadata"),
    }
    | client_facts(0, 1, 2, 3, 4),
    "envoy/status-and-body.yaml": {
        (0, "status-on-error-2xx", f"{ext_authz(0)}/status_on_error"),
        (0, "status-on-error-default", ext_authz(1)),
        (0, "validate-mutations-off", ext_authz(1)),
        (0, "partial-body", f"{ext_authz(1)}/with_request_body/allow_partial_message"),
        (0, "body-as-string", f"{ext_authz(1)}/with_request_body"),
    }
    | client_facts(0, 1),
    "envoy/timeouts.yaml": {
        (0, "missing-timeout", f"{ext_authz(0)}/grpc_service"),
        (0, "timeout-below-budget", f"{ext_authz(1)}/grpc_service/timeout"),
        (0, "timeout-below-budget", f"{ext_authz(2)}/http_service/server_uri/timeout"),
        (0, "credential-headers-not-sent", ext_authz(2)),
    }
    | client_facts(0, 1, 2),
    "envoy/invalid-timeout.yaml": {
        (0, "invalid-timeout", f"{ext_authz(0)}/grpc_service/timeout"),
    }
    | client_facts(0),
    "envoy/missing-ext-authz.yaml": {
        (0, "missing-ext-authz", f"{hcm(0)}/http_filters"),
        (0, "missing-ext-authz-local", f"{hcm(1)}/http_filters"),
    },
    "envoy/missing-ext-authz-rds.json": {
        (0, "missing-ext-authz", "/resources/0/filter_chains/0/filters/0/typed_config/http_filters"),
    },
    "envoy/after-router.yaml": {
        (0, "ext-authz-after-router", f"{hcm(0)}/http_filters/1"),
    }
    | client_facts(0),
    "envoy/per-route.yaml": {
        (0, "per-route-disabled", f"{ROUTES}/0/routes/0/{PER_ROUTE}/disabled"),
        (0, "per-route-disabled", f"{ROUTES}/0/routes/1/{PER_ROUTE}/disabled"),  # waived
        (0, "timeout-below-budget", f"{ROUTES}/0/routes/2/{PER_ROUTE}/check_settings/grpc_service/timeout"),
        (0, "per-route-disabled", f"{ROUTES}/1/{PER_ROUTE}/disabled"),
        (0, "route-cache-cleared-after-ext-authz", f"{hcm(0)}/http_filters/1"),
    }
    | client_facts(0),
    "envoy/disabled-by-default.yaml": {
        (0, "ext-authz-disabled-by-default", f"{hcm(0)}/http_filters/0/disabled"),
        (0, "ext-authz-optional", f"{hcm(0)}/http_filters/0/is_optional"),
    }
    | client_facts(0),
    "envoy/upgrade.yaml": {
        (0, "upgrade-without-ext-authz", f"{hcm(0)}/upgrade_configs/0/filters"),
    }
    | client_facts(0),
    "envoy/matcher.yaml": {
        (0, "ext-authz-behind-matcher", f"{hcm(0)}/http_filters/0"),
    }
    | client_facts(0),
    "envoy/http-service-headers.yaml": {
        (0, "forgeable-upstream-header", f"{ext_authz(0)}/{RESPONSE}/allowed_upstream_headers/patterns/0"),
        (0, "upstream-headers-match-all", f"{ext_authz(0)}/{RESPONSE}/allowed_upstream_headers/patterns/1"),
        # x-tenant (pattern 0) is in internal_only_headers; x-groups is not
        (
            0,
            "forgeable-upstream-header",
            f"{ext_authz(0)}/{RESPONSE}/allowed_upstream_headers_to_append/patterns/1",
        ),
        (0, "client-headers-match-all", f"{ext_authz(0)}/{RESPONSE}/allowed_client_headers/patterns/0"),
        (0, "credential-headers-not-sent", ext_authz(0)),
    }
    | client_facts(0),
    "envoy/duplicate-key.yaml": {
        (0, "failure-mode-allow", f"{ext_authz(0)}/failure_mode_allow"),
        (0, "duplicate-key", f"{ext_authz(0)}/failure_mode_allow"),
    }
    | client_facts(0),
    "envoy/rds-routes.yaml": {
        (
            0,
            "per-route-disabled",
            f"/resources/0/virtual_hosts/0/routes/1/route/weighted_clusters/clusters/0/{PER_ROUTE}/disabled",
        ),
    },
    "envoy/bypasses.yaml": {
        (0, "per-route-disabled", f"{hcm(1)}/route_config/virtual_hosts/0/routes/0/{PER_ROUTE}/disabled"),
        (0, "per-route-disabled", f"{hcm(1)}/route_config/virtual_hosts/0/routes/1/{PER_ROUTE}/disabled"),
        (0, "filter-disabled-fraction", f"{ext_authz(2)}/filter_enabled"),
        (0, "filter-enabled-metadata", f"{ext_authz(3)}/filter_enabled_metadata"),
        (0, "shadow-mode", f"{ext_authz(4)}/shadow_mode"),
        (0, "upgrade-without-ext-authz", f"{hcm(5)}/upgrade_configs/0/filters"),
        (0, "ext-authz-disabled-by-default", f"{hcm(6)}/http_filters/0/disabled"),
        (0, "failure-mode-allow", f"{ext_authz(7)}/failure_mode_allow"),
        (0, "status-on-error-2xx", f"{ext_authz(8)}/status_on_error"),
        (0, "failure-mode-allow", f"{ext_authz(9)}/failure_mode_allow"),
        (0, "duplicate-key", f"{ext_authz(9)}/failure_mode_allow"),
    }
    | client_facts(*range(10)),
    "envoy/request-view.yaml": {
        (0, "body-as-string", f"{ext_authz(0)}/with_request_body"),
        (0, "partial-body-limit-mismatch", f"{ext_authz(1)}/with_request_body/max_request_bytes"),
        (0, "partial-body", f"{ext_authz(1)}/with_request_body/allow_partial_message"),
        (0, "body-not-forwarded", f"{view_route(0)}/disable_request_body_buffering"),
        (0, "body-as-string", f"{view_route(1)}/with_request_body"),
        (0, "partial-body-limit-mismatch", f"{view_route(1)}/with_request_body/max_request_bytes"),
        (0, FACTS, hcm(2)),  # Envoy's defaults
        (0, FACTS, hcm(3)),  # the client's x-forwarded-for kept in front
        (0, "xff-trusted-hops", f"{hcm(4)}/xff_num_trusted_hops"),
        (0, FACTS, hcm(4)),  # the hop is trusted with the client's own x-forwarded-for
        # listener 5 is the control
        (0, "client-forwarding-headers", hcm(6)),
        (0, "credential-headers-not-sent", f"{ext_authz(7)}/allowed_headers"),
        (0, "credential-headers-not-sent", f"{ext_authz(7)}/disallowed_headers/patterns/0"),
        # listener 8 sends every header in HTTP mode
        (0, "credential-headers-not-sent", f"{ext_authz(9)}/allowed_headers"),
    }
    | raw_paths(*range(10)),
    "envoy/tls-scheme.json": {
        (0, FACTS, "/resources/0/filter_chains/0/filters/0/typed_config"),
        (0, "path-not-normalized", "/resources/0/filter_chains/0/filters/0/typed_config"),
        (0, "not-verified", "/resources/0/filter_chains/0/filters/0/typed_config/rds"),
    },
    "envoy/reading.yaml": {
        (0, FACTS, hcm(0)),
        (0, FACTS, "/static_resources/listeners/1/filterChains/0/filters/0/typedConfig"),
        (
            0,
            "failure-mode-allow",
            "/static_resources/listeners/1/filterChains/0/filters/0/typedConfig/httpFilters/0/typedConfig"
            "/failureModeAllow",
        ),
        (0, FACTS, hcm(2)),
        (
            0,
            "per-route-disabled",
            f"{hcm(2)}/route_config/virtual_hosts/0/routes/0/{PER_ROUTE}/config/disabled",
        ),
        (0, FACTS, hcm(3)),
        (0, "missing-ext-authz", "/static_resources/listeners/3/default_filter_chain/filters"),
        (0, "missing-ext-authz-local", f"{hcm(5)}/http_filters"),
    }
    | client_facts(4),
    "envoy/unverified.yaml": {
        (0, "not-verified", "/dynamic_resources/lds_config"),
        (0, "tls-client-cert-unverified", f"{TLS}/commonTlsContext/validationContext/trustChainVerification"),
        (
            0,
            "tls-client-cert-unverified",
            f"{TLS}/commonTlsContext/validationContext/allowExpiredCertificate",
        ),
        (0, "not-verified", f"{hcm(0)}/rds"),
        (0, "serves-before-ext-authz", f"{hcm(0)}/http_filters/0"),
        (0, "not-verified", f"{hcm(0)}/http_filters/1"),  # Lua
        (0, "not-verified", f"{ext_authz(0, 2)}/filter_enabled/runtime_key"),  # an RTDS layer
        (0, "not-verified", f"{hcm(0)}/http_filters/3/config_discovery"),  # ECDS may send a buffer filter
        (
            0,
            "tls-client-cert-not-requested",
            "/static_resources/listeners/1/filter_chains/0/transport_socket/typed_config/require_client_certificate",
        ),
    },
    "envoy/cache-first.yaml": {
        (0, "serves-before-ext-authz", f"{hcm(0)}/http_filters/0"),
        (0, "missing-ext-authz-local", f"{hcm(1)}/http_filters"),
    },
    "envoy/per-route-ignored.yaml": {
        (
            0,
            "per-route-ignored",
            f"{hcm(0)}/route_config/virtual_hosts/0/routes/0/typed_per_filter_config/authz_typo",
        ),
    },
    "istio/mesh-config.yaml": {
        (0, "istio-fail-open", "/extensionProviders/0/envoyExtAuthzGrpc/failOpen"),
        (0, "istio-default-timeout", "/extensionProviders/0/envoyExtAuthzGrpc"),
        (0, "status-on-error-2xx", "/extensionProviders/0/envoyExtAuthzGrpc/statusOnError"),
        (
            0,
            "partial-body",
            "/extensionProviders/0/envoyExtAuthzGrpc/includeRequestBodyInCheck/allowPartialMessage",
        ),
        (0, "body-as-string", "/extensionProviders/0/envoyExtAuthzGrpc/includeRequestBodyInCheck"),
        (0, "credential-headers-not-sent", "/extensionProviders/1/envoyExtAuthzHttp"),
        (0, "timeout-below-budget", "/extensionProviders/1/envoyExtAuthzHttp/timeout"),
        (0, "upstream-header-unverified", "/extensionProviders/1/envoyExtAuthzHttp/headersToUpstreamOnAllow"),
        (
            0,
            "upstream-headers-match-all",
            "/extensionProviders/1/envoyExtAuthzHttp/headersToUpstreamOnAllow/2",
        ),
        (
            0,
            "client-headers-match-all",
            "/extensionProviders/1/envoyExtAuthzHttp/headersToDownstreamOnDeny/0",
        ),
    },
    "istio/istio-operator.yaml": {
        # failOpen: "true" is a string: istiod refuses the whole mesh config.
        (0, "not-verified", "/spec/meshConfig/extensionProviders/0/envoyExtAuthzGrpc/failOpen"),
    },
    "istio/configmap.yaml": {
        (0, "istio-default-timeout", "/data/mesh/extensionProviders/0/envoyExtAuthzGrpc"),
    },
    "istio/authorization-policies.yaml": {
        (0, "custom-policy-no-rules", "/spec"),
        (1, "custom-policy-exempts-identities", "/spec/rules/0/from/0/source/notPrincipals"),
        (1, "custom-policy-uncovered", "/spec/rules"),
        (2, "custom-policy-path-exemption", "/spec/rules/0/to/0/operation/paths"),
        (2, "custom-policy-uncovered", "/spec/rules"),
        (3, "istio-dry-run-deny", "/metadata/annotations/istio.io~1dry-run"),
        (4, "istio-dry-run", "/metadata/annotations/istio.io~1dry-run"),
    },
    "istio/envoyfilter.yaml": {
        (0, "failure-mode-allow", "/spec/configPatches/0/patch/value/typed_config/value/failure_mode_allow"),
        (0, "credential-headers-not-sent", "/spec/configPatches/0/patch/value/typed_config/value"),
        (0, "upstream-header-unverified", f"/spec/configPatches/0/patch/value/typed_config/value/{RESPONSE}"),
    },
    "gateway/security-policy.yaml": {
        (0, "gateway-fail-open", "/spec/extAuth/failOpen"),
        (0, "gateway-default-timeout", "/spec/extAuth"),
        (0, "status-on-error-2xx", "/spec/extAuth/statusOnError"),
        (0, "upstream-header-unverified", "/spec/extAuth/http/headersToBackend"),
        (0, "credential-headers-not-sent", "/spec/extAuth"),
    },
    "gateway/timeout.yaml": {
        (0, "timeout-below-budget", "/spec/extAuth/timeout"),
    },
    **ISTIO_AND_GATEWAY_EXPECTED,
    **AGENT_GATEWAY_EXPECTED,
}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_fixture_findings(fixture: str) -> None:
    result = lint(FIXTURES / fixture)
    assert not result.errors
    assert {(f.document, f.rule, f.path) for f in result.findings} == EXPECTED[fixture]
    assert all(f.line is not None for f in result.findings)


def test_every_fixture_is_listed() -> None:
    on_disk = {
        str(p.relative_to(FIXTURES))
        for p in FIXTURES.rglob("*")
        if p.is_file() and p.parent.name not in {"clean", "broken"}
    }
    assert on_disk == set(EXPECTED)


def test_every_rule_has_a_fixture_and_a_line_in_the_docs() -> None:
    triggered = {rule for expected in EXPECTED.values() for _, rule, _ in expected}
    assert triggered == {rule.id for rule in ALL_RULES}
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", (REPO / "docs/lint.md").read_text(), re.MULTILINE))
    assert documented == {rule.id for rule in ALL_RULES}


def test_rule_ids_are_unique() -> None:
    assert len({rule.id for rule in ALL_RULES}) == len(ALL_RULES)


def test_severity_is_the_rules_unless_waived() -> None:
    severities = {rule.id: rule.severity for rule in ALL_RULES}
    result = lint(FIXTURES)
    for finding in result.findings:
        if finding.message.startswith("waived ("):
            assert finding.severity is Severity.INFO
        else:
            assert finding.severity is severities[finding.rule], finding


def test_a_waiver_keeps_the_finding_as_info_with_its_reason() -> None:
    (waived,) = [f for f in lint(FIXTURES / "envoy/per-route.yaml").findings if "routes/1/" in f.path]
    assert waived.rule == "per-route-disabled"
    assert waived.severity is Severity.INFO
    assert waived.message.startswith("waived (kubelet probes carry no identity): ext_authz is disabled")


def test_lines_point_at_the_offending_key() -> None:
    fixture = FIXTURES / "envoy/duplicate-key.yaml"
    lines = fixture.read_text().splitlines()
    findings = [f for f in lint(fixture).findings if f.rule in {"failure-mode-allow", "duplicate-key"}]
    assert len(findings) == 2
    for finding in findings:
        assert finding.line is not None
        assert lines[finding.line - 1].strip() == "failure_mode_allow: true"  # the value Envoy uses


def test_lines_inside_an_embedded_mesh_config() -> None:
    fixture = FIXTURES / "istio/configmap.yaml"
    (finding,) = lint(fixture).findings
    assert finding.line is not None
    assert fixture.read_text().splitlines()[finding.line - 1].strip() == "envoyExtAuthzGrpc:"


def test_messages_name_the_numbers() -> None:
    findings = {f.path: f for f in lint(FIXTURES / "envoy/timeouts.yaml").findings}
    short = findings[f"{ext_authz(1)}/grpc_service/timeout"]
    assert "Envoy waits 100 ms" in short.message and "gives OPA 80 ms instead of its 150 ms" in short.message
    assert "at least 178 ms, e.g. 0.25s" in short.fix
    tiny = findings[f"{ext_authz(2)}/http_service/server_uri/timeout"]
    assert "every check is denied (deadline_exceeded)" in tiny.message
    missing = findings[f"{ext_authz(0)}/grpc_service"]
    assert "Envoy waits 200 ms" in missing.message
