"""Client certificate settings of a TLS listener that make the peer principal
a fact the client chooses.

Envoy sends the check the principal of whatever client certificate its TLS
settings let through, and the sidecar's ``--require-tls-peer`` (or a policy
reading ``attributes.source.principal``) cannot tell a verified one from another.
Observed on Envoy 1.40 (tests/operations/test_peer_principal_trust.py):
``trust_chain_verification: ACCEPT_UNTRUSTED`` passed on a certificate from a CA
nobody trusts, ``allow_expired_certificate: true`` an expired one, each as the
principal it names; ``require_client_certificate: true`` with no trusted CA
started, but asked the client for no certificate at all.
"""

from __future__ import annotations

from sidecar.lint import rules
from sidecar.lint.findings import Issue, Pointer
from sidecar.lint.values import Json, as_dict, enum_name, is_true

DOWNSTREAM_TLS_TYPES = frozenset(
    {
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "envoy.api.v2.auth.DownstreamTlsContext",
    }
)
_TRUST_CHAIN = ("VERIFY_TRUST_CHAIN", "ACCEPT_UNTRUSTED")
# Where a validation context can get its trust from besides trusted_ca.
_TRUST_SOURCES = ("trusted_ca", "ca_certificate_provider_instance", "custom_validator_config")
# Validation delivered by another source than this file.
_ELSEWHERE = (
    "validation_context_sds_secret_config",
    "validation_context_certificate_provider",
    "validation_context_certificate_provider_instance",
)
_PRINCIPAL = (
    "reaches the sidecar as the peer principal, which --require-tls-peer and any policy reading "
    "attributes.source.principal take as verified"
)


def check_downstream_tls(config: dict[str, Json], path: Pointer) -> list[Issue]:
    common = as_dict(config.get("common_tls_context")) or {}
    common_path: Pointer = (*path, "common_tls_context")
    contexts: list[tuple[dict[str, Json], Pointer]] = []
    elsewhere: list[Pointer] = [(*common_path, key) for key in _ELSEWHERE if key in common]
    if isinstance(common.get("validation_context"), dict):
        contexts.append((common["validation_context"], (*common_path, "validation_context")))  # type: ignore[arg-type]
    combined = as_dict(common.get("combined_validation_context"))
    if combined is not None:
        combined_path: Pointer = (*common_path, "combined_validation_context")
        default = as_dict(combined.get("default_validation_context"))
        if default is not None:
            contexts.append((default, (*combined_path, "default_validation_context")))
        elsewhere += [(*combined_path, key) for key in _ELSEWHERE if key in combined]
    issues = [issue for context, where in contexts for issue in _weakened(context, where)]
    if elsewhere:
        issues.append(
            rules.NOT_VERIFIED.issue(
                elsewhere[0],
                f"client certificate validation comes from {elsewhere[0][-1]} (SDS or a certificate "
                "provider), which the linter cannot read: whether it accepts untrusted or expired "
                f"certificates, whose principal {_PRINCIPAL}, is not verified",
                "lint the secret the server sends too, or put the validation context in this file",
            )
        )
    elif is_true(config.get("require_client_certificate")) and not any(
        key in context for context, _ in contexts for key in _TRUST_SOURCES
    ):
        issues.append(
            rules.TLS_CLIENT_CERT_NOT_REQUESTED.issue(
                (*path, "require_client_certificate"),
                "require_client_certificate: true with no trusted_ca (nor a custom validator): Envoy 1.40 "
                "starts, but asks the client for no certificate, so no request carries a peer principal "
                "(with --require-tls-peer every request is denied)",
                "add validation_context.trusted_ca with the CA that issues client certificates",
            )
        )
    return issues


def _weakened(context: dict[str, Json], path: Pointer) -> list[Issue]:
    issues = []
    if enum_name(context.get("trust_chain_verification", 0), _TRUST_CHAIN) == "ACCEPT_UNTRUSTED":
        issues.append(
            rules.TLS_CLIENT_CERT_UNVERIFIED.issue(
                (*path, "trust_chain_verification"),
                "trust_chain_verification: ACCEPT_UNTRUSTED lets a client certificate from any CA through "
                f"the handshake: a forged certificate naming someone else {_PRINCIPAL} (Envoy 1.40 passed "
                "one on as the principal it named)",
                "remove trust_chain_verification (VERIFY_TRUST_CHAIN is the default)",
            )
        )
    if is_true(context.get("allow_expired_certificate")):
        issues.append(
            rules.TLS_CLIENT_CERT_UNVERIFIED.issue(
                (*path, "allow_expired_certificate"),
                "allow_expired_certificate: true lets an expired client certificate through the handshake: "
                f"a stolen or revoked-by-expiry identity {_PRINCIPAL} (Envoy 1.40 passed an expired one on)",
                "remove allow_expired_certificate",
            )
        )
    return issues
