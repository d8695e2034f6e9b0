"""Test PKI: a CA, a server certificate for 127.0.0.1/localhost, a SPIFFE client
certificate, and the same again from a second, untrusted CA; also an expired client
certificate and one with another SPIFFE ID, both from the trusted CA.

EC P-256 keys keep generation to milliseconds. Files are PEM, written to a
directory the caller owns.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_SPIFFE_ID = "spiffe://example.org/ns/demo/sa/client"
OTHER_SPIFFE_ID = "spiffe://example.org/ns/demo/sa/other"
_VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the trusted CA's certificate
    server: CertPair  # SAN 127.0.0.1, ::1, localhost; signed by `ca`
    client: CertPair  # URI SAN CLIENT_SPIFFE_ID; signed by `ca`
    wrong_name_server: CertPair  # signed by `ca`, but only for other.example
    rogue_ca: Path  # a CA nobody trusts
    rogue_server: CertPair  # like `server`, signed by `rogue_ca`
    rogue_client: CertPair  # like `client`, signed by `rogue_ca`
    expired_client: CertPair  # like `client`, but its validity ended an hour ago
    other_client: CertPair  # URI SAN OTHER_SPIFFE_ID; signed by `ca`


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    *,
    expired: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = issuer
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        now -= _VALIDITY + datetime.timedelta(hours=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_pair(
    directory: Path, stem: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> CertPair:
    cert, key = pair
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return CertPair(_write_cert(directory / f"{stem}.crt", cert), key_path)


def _server_sans(*dns: str) -> list[x509.GeneralName]:
    return [
        *(x509.DNSName(name) for name in dns),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


def make_pki(directory: Path) -> Pki:
    """Generate every certificate into `directory` (which must exist)."""
    ca = _ca("opa-sidecar test CA")
    rogue = _ca("untrusted test CA")
    client_sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(CLIENT_SPIFFE_ID)]
    server_usage, client_usage = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    return Pki(
        ca=_write_cert(directory / "ca.crt", ca[0]),
        server=_write_pair(
            directory, "server", _leaf(ca, "localhost", _server_sans("localhost"), server_usage)
        ),
        client=_write_pair(directory, "client", _leaf(ca, "client", client_sans, client_usage)),
        wrong_name_server=_write_pair(
            directory,
            "wrong-name",
            _leaf(ca, "other.example", [x509.DNSName("other.example")], server_usage),
        ),
        rogue_ca=_write_cert(directory / "rogue-ca.crt", rogue[0]),
        rogue_server=_write_pair(
            directory, "rogue-server", _leaf(rogue, "localhost", _server_sans("localhost"), server_usage)
        ),
        rogue_client=_write_pair(
            directory, "rogue-client", _leaf(rogue, "client", client_sans, client_usage)
        ),
        expired_client=_write_pair(
            directory, "expired-client", _leaf(ca, "client", client_sans, client_usage, expired=True)
        ),
        other_client=_write_pair(
            directory,
            "other-client",
            _leaf(ca, "other", [x509.UniformResourceIdentifier(OTHER_SPIFFE_ID)], client_usage),
        ),
    )
