"""The request-view rules on small configs: what makes each fire and what does not."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sidecar.config import Settings
from sidecar.lint.envoy_body_view import check_body, check_route_body
from sidecar.lint.envoy_forwarded import check_forwarded_facts, listener_tls
from sidecar.lint.envoy_model import http_filters
from sidecar.lint.envoy_sent_headers import check_sent_headers
from sidecar.lint.sidecar_settings import DEFAULT_ENVOY_MAX_REQUEST_BYTES

AUTHZ = {
    "name": "envoy.filters.http.ext_authz",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"},
}
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def test_the_linters_default_limit_is_the_sidecars() -> None:
    default = next(f.default for f in fields(Settings) if f.name == "envoy_max_request_bytes")
    assert default == DEFAULT_ENVOY_MAX_REQUEST_BYTES


def rules(issues: list[Any]) -> list[str]:
    return [issue.rule.id for issue in issues]


def test_pack_as_bytes_matters_only_over_grpc() -> None:
    body = {"max_request_bytes": 8192}
    assert rules(check_body(body, (), 8192, grpc=True)) == ["body-as-string"]
    assert rules(check_body(body, (), 8192, grpc=False)) == []
    assert rules(check_body({**body, "pack_as_bytes": True}, (), 8192, grpc=True)) == []
    assert rules(check_body({**body, "pack_as_bytes": "true"}, (), 8192, grpc=True)) == []


def test_the_limit_matters_only_for_partial_messages() -> None:
    cut = {"max_request_bytes": "4096", "allow_partial_message": True, "pack_as_bytes": True}
    assert rules(check_body(cut, (), 8192, grpc=True)) == ["partial-body-limit-mismatch"]
    assert rules(check_body(cut, (), 4096, grpc=True)) == []
    assert rules(check_body({**cut, "allow_partial_message": False}, (), 8192, grpc=True)) == []
    (smaller,) = check_body(cut, (), 8192, grpc=True)
    assert "a cut body reaches the policy as the whole body" in smaller.message
    (larger,) = check_body({**cut, "max_request_bytes": 65536}, (), 8192, grpc=True)
    assert "complete bodies are marked truncated" in larger.message
    assert "--envoy-max-request-bytes 65536" in larger.fix


def test_a_route_that_overrides_the_service_with_http_needs_no_pack_as_bytes() -> None:
    settings: dict[str, Any] = {"with_request_body": {"max_request_bytes": 8192}, "http_service": {}}
    assert rules(check_route_body(settings, (), 8192)) == []
    del settings["http_service"]
    assert rules(check_route_body(settings, (), 8192)) == ["body-as-string"]
    assert rules(check_route_body({"disable_request_body_buffering": True}, (), 8192)) == [
        "body-not-forwarded"
    ]


def facts(hcm: dict[str, Any], tls: bool | None = None) -> list[Any]:
    filters = http_filters(hcm.get("http_filters"), ("http_filters",))
    return check_forwarded_facts(hcm, (), filters, filters[0], hcm.get("route_config"), tls=tls)


def trusted(**overrides: Any) -> dict[str, Any]:
    early = {
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3"
            ".HeaderMutation",
            "mutations": [
                {"remove": name} for name in ("x-forwarded-for", "forwarded", "x-forwarded-host", "x-real-ip")
            ],
        }
    }
    hcm = {
        "use_remote_address": True,
        "scheme_header_transformation": {"scheme_to_overwrite": "http"},
        "early_header_mutation_extensions": [early],
        "http_filters": [AUTHZ, ROUTER],
    }
    hcm.update(overrides)
    return hcm


def test_forwarded_facts_from_the_connection_need_every_setting() -> None:
    assert facts(trusted()) == []
    (issue,) = facts(trusted(use_remote_address=False))
    assert (
        issue.rule.id == "forwarded-facts-from-client" and "use_remote_address is not true" in issue.message
    )
    (issue,) = facts(trusted(scheme_header_transformation={"match_upstream": True}))
    assert "an HTTP/2 client chooses :scheme" in issue.message
    (issue,) = facts(trusted(early_header_mutation_extensions=[]))
    assert "its entries stay in front of the address Envoy appends" in issue.message
    (issue,) = facts(trusted(early_header_mutation_extensions=[], skip_xff_append=True))
    assert "the whole header is the client's" in issue.message
    assert rules(facts(trusted(xff_num_trusted_hops=2))) == ["xff-trusted-hops"]
    assert facts(trusted(xff_num_trusted_hops=0)) == []


def test_the_scheme_must_be_the_listeners() -> None:
    assert facts(trusted(), tls=False) == []
    (issue,) = facts(trusted(), tls=True)
    assert "scheme_to_overwrite is http on a TLS listener" in issue.message
    assert issue.fix == "set scheme_to_overwrite: https"


def test_an_overwrite_by_number_or_a_filter_before_ext_authz_removes_the_client_copy() -> None:
    overwrite = {
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3"
            ".HeaderMutation",
            "mutations": [
                {"append": {"header": {"key": "x-forwarded-for", "value": "%DOWNSTREAM_REMOTE_ADDRESS%"},
                            "append_action": 2}},
            ],
        }
    }  # fmt: skip
    assert rules(facts(trusted(early_header_mutation_extensions=[overwrite]))) == [
        "client-forwarding-headers"
    ]
    appended = {
        **overwrite["typed_config"],
        "mutations": [{"append": {"header": {"key": "x-forwarded-for"}}}],
    }
    kept = facts(trusted(early_header_mutation_extensions=[{"typed_config": appended}]))
    assert rules(kept) == ["forwarded-facts-from-client"]
    removing_filter = {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": "x-forwarded-for"}]},
        },
    }
    before = trusted(early_header_mutation_extensions=[], http_filters=[removing_filter, AUTHZ, ROUTER])
    assert rules(facts_of_filter(before, 1)) == ["client-forwarding-headers"]
    after = trusted(early_header_mutation_extensions=[], http_filters=[AUTHZ, removing_filter, ROUTER])
    assert rules(facts_of_filter(after, 0)) == ["forwarded-facts-from-client"]


def facts_of_filter(hcm: dict[str, Any], position: int) -> list[Any]:
    filters = http_filters(hcm.get("http_filters"), ("http_filters",))
    return check_forwarded_facts(hcm, (), filters, filters[position], None, tls=None)


def test_listener_tls_reads_the_filter_chain() -> None:
    chain: dict[str, Any] = {"filters": [{"typed_config": {}}]}
    data = {"filter_chains": [chain]}
    path = ("filter_chains", 0, "filters", 0, "typed_config")
    assert listener_tls(data, path) is False
    chain["transport_socket"] = {"name": "envoy.transport_sockets.tls"}
    assert listener_tls(data, path) is True
    assert listener_tls(data, ("typed_config",)) is None
    assert listener_tls(data, ("filter_chains", 5, "filters", 0, "typed_config")) is None


def test_credential_headers_in_both_modes() -> None:
    every = {"patterns": [{"safe_regex": {"regex": ".*"}}]}
    assert check_sent_headers({"grpc_service": {}}, ()) == []
    assert check_sent_headers({"http_service": {}, "allowed_headers": every}, ()) == []
    (unset,) = check_sent_headers({"http_service": {}}, ())
    assert "unset in HTTP mode" in unset.message and "cookie, proxy-authorization" in unset.message
    few = {"patterns": [{"exact": "cookie"}, {"prefix": "x-"}]}
    (grpc,) = check_sent_headers({"grpc_service": {}, "allowed_headers": few}, ("f",))
    assert grpc.path == ("f", "allowed_headers")
    assert "leaves out proxy-authorization:" in grpc.message
    deprecated: dict[str, Any] = {"http_service": {"authorization_request": {"allowed_headers": few}}}
    (old,) = check_sent_headers(deprecated, ())
    assert old.path == ("http_service", "authorization_request", "allowed_headers")
    hidden: dict[str, Any] = {
        "grpc_service": {},
        "disallowed_headers": {"patterns": [{"exact": "user-agent"}, {"prefix": "x-a"}]},
    }
    (issue,) = check_sent_headers(hidden, ())
    assert issue.path == ("disallowed_headers", "patterns", 1)
    assert (
        "keeps x-api-key, x-auth-token, x-access-token, x-amz-security-token from the policy" in issue.message
    )
