"""TLS material for both sides: the gRPC listener (TLS, optionally mutual) and
the connection to OPA. Verification is never switched off: there is no flag
for it, and an https OPA URL without a CA file uses the system's trust store.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from sidecar.config import ConfigError, Settings


def grpc_server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Credentials for the gRPC listener, or None for plaintext."""
    if not settings.grpc_tls_cert or not settings.grpc_tls_key:
        return None
    _check_listener_material(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_client_ca)
    chain = Path(settings.grpc_tls_cert).read_bytes()
    key = Path(settings.grpc_tls_key).read_bytes()
    client_ca = Path(settings.grpc_client_ca).read_bytes() if settings.grpc_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _check_listener_material(cert: str, key: str, client_ca: str | None) -> None:
    """gRPC only reports bad PEM as a failure to bind the port; load it here
    first so the error names the flag and the actual problem."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"invalid --grpc-tls-cert / --grpc-tls-key: {exc}") from None
    if client_ca:
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"invalid --grpc-client-ca: {exc}") from None


def opa_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client context for an https OPA URL, or None for http and unix sockets."""
    if settings.opa_url.scheme != "https":
        return None
    try:
        context = ssl.create_default_context(cafile=settings.opa_ca_file)
        if settings.opa_client_cert and settings.opa_client_key:
            context.load_cert_chain(settings.opa_client_cert, settings.opa_client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"invalid TLS material for OPA (--opa-ca-file / --opa-client-cert): {exc}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
