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
    chain = Path(settings.grpc_tls_cert).read_bytes()
    key = Path(settings.grpc_tls_key).read_bytes()
    client_ca = Path(settings.grpc_client_ca).read_bytes() if settings.grpc_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


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
