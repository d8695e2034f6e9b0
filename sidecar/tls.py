"""TLS material for both sides: the gRPC listener (TLS, optionally mutual) and
the connection to OPA. Verification is never switched off: there is no flag
for it, and an https OPA URL without a CA file uses the system's trust store.

Both are re-read when their files change (sidecar/tls_reload.py): the
listener's new handshakes get the new certificate and client CA, the OPA
client's new connections the new CA and client certificate. Every file is
checked here first, so a bad one is named rather than left to fail inside
gRPC or a handshake.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from sidecar.config import ConfigError, Settings
from sidecar.regular_file import FileRefused, read_regular_file
from sidecar.tls_reload import MaterialError, ReloadReport, WatchedMaterial

MAX_PEM_BYTES = 1 << 20  # far above any certificate chain or bundle in use
GRPC_LISTENER = "grpc_listener"  # also the metrics' label values
OPA_CLIENT = "opa_client"
# What the OPA endpoint connects with (sidecar.opa.http1.Endpoint.ssl_context).
OpaTls = ssl.SSLContext | Callable[[], ssl.SSLContext] | None


def _read_pem(flag: str, path: str) -> str:
    """The file's text: a regular file (a FIFO could block the reader forever)
    of at most MAX_PEM_BYTES of ASCII."""
    try:
        data = read_regular_file(path, MAX_PEM_BYTES)
    except FileRefused as refused:
        raise MaterialError(f"{flag} {path}: {refused}") from None
    if not data.strip():
        raise MaterialError(f"{flag} {path}: empty")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise MaterialError(f"{flag} {path}: not PEM text") from None


def _check_certificates(flag: str, path: str, pem: str) -> None:
    """Every PEM block must be a whole certificate: a file cut short mid-write fails here."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise MaterialError(f"{flag} {path}: not complete PEM certificates") from None


def _load_pair(context: ssl.SSLContext, cert_flag: str, cert: str, key_flag: str, key: str) -> None:
    """Load a certificate whose file was checked, with its key: a failure is the key's."""
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise MaterialError(f"{key_flag} {key}: does not match {cert_flag} {cert}") from None
        raise MaterialError(f"{key_flag} {key}: not a complete PEM private key") from None
    except OSError as exc:
        raise MaterialError(f"{key_flag} {key}: cannot read ({exc.strerror})") from None


@dataclass(frozen=True)
class ListenerMaterial:
    chain: bytes
    key: bytes
    client_ca: bytes | None


def load_listener_material(cert: str, key: str, client_ca: str | None) -> ListenerMaterial:
    """The listener's files, each checked; raises MaterialError naming the bad one."""
    chain = _read_pem("--grpc-tls-cert", cert)
    _check_certificates("--grpc-tls-cert", cert, chain)
    key_pem = _read_pem("--grpc-tls-key", key)
    ca_pem = None
    if client_ca:
        ca_pem = _read_pem("--grpc-client-ca", client_ca)
        _check_certificates("--grpc-client-ca", client_ca, ca_pem)
    # The pair is matched from the paths (ssl reads no key from memory); the
    # files must still hold what was read, or the pair checked is not the one used.
    _load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "--grpc-tls-cert", cert, "--grpc-tls-key", key)
    if _read_pem("--grpc-tls-cert", cert) != chain or _read_pem("--grpc-tls-key", key) != key_pem:
        raise MaterialError(f"--grpc-tls-cert {cert} or --grpc-tls-key {key}: changed while being read")
    return ListenerMaterial(chain.encode(), key_pem.encode(), ca_pem.encode() if ca_pem else None)


def _certificate_configuration(material: ListenerMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.chain)], root_certificates=material.client_ca
    )


def grpc_server_credentials(
    settings: Settings, report: ReloadReport | None = None
) -> grpc.ServerCredentials | None:
    """Credentials for the gRPC listener, or None for plaintext. gRPC asks for
    the configuration before each handshake; it gets a new one only after the
    files changed and loaded."""
    cert, key, client_ca = settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_client_ca
    if not cert or not key:
        return None
    paths = [cert, key, *([client_ca] if client_ca else [])]
    try:
        watched = WatchedMaterial(
            GRPC_LISTENER, paths, lambda: load_listener_material(cert, key, client_ca), report
        )
    except MaterialError as exc:
        raise ConfigError(f"invalid {exc}") from None
    served = [watched.current()]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called on gRPC's threads: no file access, one attribute read.
        material = watched.current()
        if material is served[0]:
            return None
        served[0] = material
        return _certificate_configuration(material)

    # Whether a client certificate is required is fixed at start: only the CA rotates.
    return grpc.dynamic_ssl_server_credentials(
        _certificate_configuration(served[0]),
        fetch,  # type: ignore[arg-type]  # the stubs omit the None ("unchanged") gRPC documents
        require_client_authentication=client_ca is not None,
    )


def load_opa_context(settings: Settings) -> ssl.SSLContext:
    """A fresh client context for OPA from the files; raises MaterialError naming the bad one."""
    cafile = settings.opa_ca_file
    cadata = None
    if cafile:
        cadata = _read_pem("--opa-ca-file", cafile)
        _check_certificates("--opa-ca-file", cafile, cadata)
    context = ssl.create_default_context(cadata=cadata)  # without a CA file: the system store
    cert, key = settings.opa_client_cert, settings.opa_client_key
    if cert and key:
        _check_certificates("--opa-client-cert", cert, _read_pem("--opa-client-cert", cert))
        _load_pair(context, "--opa-client-cert", cert, "--opa-client-key", key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def opa_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client context for an https OPA URL as the files are now, or None
    for http and unix sockets."""
    if settings.opa_url.scheme != "https":
        return None
    try:
        return load_opa_context(settings)
    except MaterialError as exc:
        raise ConfigError(f"invalid TLS material for OPA: {exc}") from None


def opa_tls(settings: Settings, report: ReloadReport | None = None) -> OpaTls:
    """What the OPA endpoint connects with: None for http and unix sockets, a
    fixed context when no file is given (the system store), else the latest
    context made from the files."""
    paths = [p for p in (settings.opa_ca_file, settings.opa_client_cert, settings.opa_client_key) if p]
    if settings.opa_url.scheme != "https" or not paths:
        return opa_ssl_context(settings)
    try:
        watched = WatchedMaterial(OPA_CLIENT, paths, lambda: load_opa_context(settings), report)
    except MaterialError as exc:
        raise ConfigError(f"invalid TLS material for OPA: {exc}") from None
    return watched.current
