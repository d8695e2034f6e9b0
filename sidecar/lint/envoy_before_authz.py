"""HTTP filters placed before ext_authz. Whatever they do happens before the
check: a cache answers from upstream content without one, and a filter whose
behaviour the linter does not know (or that runs arbitrary code) may answer or
forward on its own."""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.envoy_model import HttpFilter
from sidecar.lint.findings import Issue

_HTTP = "envoy.extensions.filters.http."
# Serve a request from the upstream themselves, before any later filter runs
# (tests/lint/test_reading_behaviour.py).
_SERVING = ("cache.", "cache_v2.")
# Run code or ask another server what to do: they can answer or forward anything.
_PROGRAMMABLE = ("lua.", "wasm.", "golang.", "dynamic_modules.", "ext_proc.", "composite.", "tap.")
# Known to only check, refuse, answer locally, or change the request the check then sees.
_KNOWN = (
    "adaptive_concurrency.",
    "admission_control.",
    "alternate_protocols_cache.",
    "api_key_auth.",
    "aws_request_signing.",
    "bandwidth_limit.",
    "basic_auth.",
    "buffer.",
    "compressor.",
    "connect_grpc_bridge.",
    "cors.",
    "credential_injector.",
    "csrf.",
    "decompressor.",
    "ext_authz.",
    "fault.",
    "file_system_buffer.",
    "gcp_authn.",
    "geoip.",
    "grpc_field_extraction.",
    "grpc_http1_bridge.",
    "grpc_json_transcoder.",
    "grpc_stats.",
    "grpc_web.",
    "header_mutation.",
    "header_to_metadata.",
    "health_check.",
    "ip_tagging.",
    "json_to_metadata.",
    "jwt_authn.",
    "local_ratelimit.",
    "oauth2.",
    "on_demand.",
    "original_src.",
    "proto_message_extraction.",
    "rate_limit_quota.",
    "ratelimit.",
    "rbac.",
    "router.",  # before ext_authz only when misplaced: ext-authz-after-router
    "set_filter_state.",
    "set_metadata.",
    "stateful_session.",
)


def check_before_authz(filters: list[HttpFilter], authz: HttpFilter) -> list[Issue]:
    issues = []
    for earlier in filters[: authz.index]:
        kind = (earlier.type_name or "").removeprefix(_HTTP)
        label = earlier.name or earlier.type_name or "a filter"
        if kind.startswith(_SERVING):
            issues.append(
                rules.SERVES_BEFORE_EXT_AUTHZ.issue(
                    earlier.path,
                    f"{label} runs before ext_authz and serves requests from the upstream itself: Envoy 1.40 "
                    "answered requests the policy denied with the upstream's response, from the cache and "
                    "even on a miss, and never asked the sidecar",
                    "place the cache after ext_authz (before the router)",
                )
            )
        elif earlier.type_name is None or not kind.startswith(_KNOWN) or kind.startswith(_PROGRAMMABLE):
            what = "runs code or asks another server" if kind.startswith(_PROGRAMMABLE) else "is not known"
            issues.append(
                rules.NOT_VERIFIED.issue(
                    earlier.path,
                    f"{label} runs before ext_authz and {what} to the linter: it may answer a request or "
                    "send it on before the check, which the linter cannot verify",
                    "place it after ext_authz, or check by hand that it never answers from or forwards to "
                    "an upstream",
                )
            )
    return issues
