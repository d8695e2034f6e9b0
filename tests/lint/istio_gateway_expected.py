"""The findings expected on the Istio and Envoy Gateway fixtures that show how
their control planes read a configuration (merged into test_fixtures.EXPECTED)."""

from __future__ import annotations

PATCH = "/spec/configPatches"
OPERATION = "patch/operation"
MESH = "/extension_providers/0/envoy_ext_authz_grpc"
BOTH = "/extension_providers/1/envoyExtAuthzGrpc"

ISTIO_AND_GATEWAY_EXPECTED: dict[str, set[tuple[int, str, str]]] = {
    "istio/envoyfilter-patches.yaml": {
        (0, "envoyfilter-removes-ext-authz", f"{PATCH}/0/{OPERATION}"),  # outbound patch 1: nothing
        (1, "envoyfilter-removes-ext-authz", f"{PATCH}/0/{OPERATION}"),
        (2, "failure-mode-allow", f"{PATCH}/0/patch/value/typed_config/failureModeAllow"),
        (2, "not-verified", f"{PATCH}/1/patch/value/typed_config/failure_mode_allow"),
        (
            3,
            "per-route-disabled",
            f"{PATCH}/0/patch/value/typed_per_filter_config/envoy.filters.http.ext_authz/disabled",
        ),
        (4, "serves-before-ext-authz", f"{PATCH}/0/patch/value"),
        (4, "not-verified", f"{PATCH}/1/patch/value"),  # Lua right after metadata exchange
        (5, "envoyfilter-removes-ext-authz", f"{PATCH}/0/{OPERATION}"),
        (5, "not-verified", f"{PATCH}/1/{OPERATION}"),
    },
    "istio/custom-exemptions.yaml": {
        (0, "custom-policy-client-exemption", "/spec/rules/0/when/0/key"),
        (1, "custom-policy-client-exemption", "/spec/rules/0/to/0/operation/notHosts"),
        (1, "custom-policy-client-exemption", "/spec/rules/1/from/0/source/requestPrincipals"),
        (2, "custom-policy-path-exemption", "/spec/rules/0/to/0/operation/notPaths"),
        # no ALLOW policy in the file: what each rule skips passes unchecked
        *{(document, "custom-policy-uncovered", "/spec/rules") for document in (0, 1, 2, 4)},
    },
    "istio/mesh-spellings.yaml": {
        (0, "istio-fail-open", f"{MESH}/fail_open"),
        (0, "duplicate-key", f"{BOTH}/fail_open"),  # istiod reads failOpen: false
        (0, "not-verified", f"{BOTH}/statusOnError"),  # a number in a string field
    },
    "gateway/route-override.yaml": {
        (2, "gateway-route-policy-drops-ext-auth", "/spec/targetRefs/0"),
        (2, "not-verified", "/spec/targetRefs/1"),  # the route is not among the files
    },
    "gateway/spellings.yaml": {
        (0, "gateway-fail-open", "/spec/extAuth/failOpen"),  # fail_open is dropped by the schema
        (0, "invalid-timeout", "/spec/extAuth/timeout"),
        (0, "body-as-string", "/spec/extAuth/bodyToExtAuth"),
        (0, "credential-headers-not-sent", "/spec/extAuth/headersToExtAuth"),
    },
}
