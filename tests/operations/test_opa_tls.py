"""TLS to OPA: the CA file is honoured, verification cannot be avoided, and a
client certificate is presented when configured."""

from __future__ import annotations

import dataclasses
import ssl

import pytest

from sidecar.config import SERVE_OPTIONS, Settings, parse_opa_url
from sidecar.envoy.response import PERMISSION_DENIED
from sidecar.tls import opa_ssl_context
from tests.check_requests import check_request
from tests.fixtures.sidecar import running_sidecar
from tests.operations.tls_opa import tls_opa
from tests.tls.certs import CLIENT_SPIFFE_ID, Pki


async def test_https_with_the_ca_file_allows(pki: Pki) -> None:
    async with (
        tls_opa(pki.server) as opa,
        running_sidecar(opa.url, opa_ca_file=str(pki.ca), ready_without_opa=False) as sidecar,
    ):
        assert sidecar.sidecar.readiness.ready  # the /health probe went over TLS too
        response = await sidecar.check(check_request())
    assert response.status.code == 0
    posts = [r for r in opa.requests if r.request_line.startswith("POST")]
    assert len(posts) == 1
    assert posts[0].peer_certificate is None  # none configured, none sent


async def test_hostname_in_the_url_is_verified_by_name(pki: Pki) -> None:
    async with tls_opa(pki.server) as opa:
        url = opa.url.replace("127.0.0.1", "localhost")
        async with running_sidecar(url, opa_ca_file=str(pki.ca)) as sidecar:
            response = await sidecar.check(check_request())
    assert response.status.code == 0


@pytest.mark.parametrize(
    ("server", "ca"),
    [
        ("rogue_server", "ca"),  # a certificate from a CA we do not trust
        ("wrong_name_server", "ca"),  # our CA, but issued for another host name
        ("server", None),  # no --opa-ca-file: the system store does not know the test CA
    ],
)
async def test_unverifiable_opa_certificate_is_denied(pki: Pki, server: str, ca: str | None) -> None:
    pair = getattr(pki, server)
    ca_file = str(getattr(pki, ca)) if ca else None
    async with tls_opa(pair) as opa, running_sidecar(opa.url, opa_ca_file=ca_file) as sidecar:
        response = await sidecar.check(check_request())
        [entry] = sidecar.decisions()
    assert response.status.code == PERMISSION_DENIED
    assert entry["reason"] == "opa_unreachable"
    assert opa.requests == []  # no request left the client over the failed handshake


def test_verification_cannot_be_switched_off(pki: Pki) -> None:
    # No flag, env var or setting can turn certificate or host name checks off.
    words = ("insecure", "skip-verify", "skip-tls", "verify", "no-tls", "noverify", "tls-skip")
    assert not [o.flag for o in SERVE_OPTIONS if any(w in o.flag for w in words)]
    assert not [f.name for f in dataclasses.fields(Settings) if any(w in f.name for w in words)]
    for ca_file in (None, str(pki.ca)):
        settings = Settings(opa_url=parse_opa_url("https://opa.example:8181"), opa_ca_file=ca_file)
        context = opa_ssl_context(settings)
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_client_certificate_is_presented_when_configured(pki: Pki) -> None:
    async with (
        tls_opa(pki.server, client_ca=str(pki.ca)) as opa,
        running_sidecar(
            opa.url,
            opa_ca_file=str(pki.ca),
            opa_client_cert=str(pki.client.cert),
            opa_client_key=str(pki.client.key),
            ready_without_opa=False,
        ) as sidecar,
    ):
        assert sidecar.sidecar.readiness.ready
        response = await sidecar.check(check_request())
    assert response.status.code == 0
    assert opa.requests
    for seen in opa.requests:  # the check and the readiness probe alike
        assert seen.peer_certificate is not None
        assert ("URI", CLIENT_SPIFFE_ID) in seen.peer_certificate["subjectAltName"]


async def test_opa_requiring_a_client_certificate_denies_without_one(pki: Pki) -> None:
    async with (
        tls_opa(pki.server, client_ca=str(pki.ca)) as opa,
        running_sidecar(opa.url, opa_ca_file=str(pki.ca)) as sidecar,
    ):
        response = await sidecar.check(check_request())
        [entry] = sidecar.decisions()
    assert response.status.code == PERMISSION_DENIED
    assert entry["reason"] == "opa_unreachable"
    assert opa.requests == []
