"""Real Envoy, TLS and mTLS end to end, with certificates generated for the run.

Envoy's client-facing listener requires a client certificate, so the check
carries a verified SPIFFE principal; Envoy reaches the sidecar over mTLS with
its own client certificate. The sidecar runs with --require-tls-peer, so the
same sidecar denies a check from Envoy's plaintext listener without asking OPA.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fault_opa import FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.tls.certs import CLIENT_SPIFFE_ID, Pki
from tests.tls.envoy import Envoy, render_mtls_config, running_envoy


@dataclass
class MtlsStack:
    envoy: Envoy
    ports: dict[str, int]
    mtls_sidecar: SidecarHandle  # --grpc-client-ca, --require-tls-peer
    tls_sidecar: SidecarHandle  # server TLS only
    pki: Pki

    async def get(self, listener: str, path: str, *, client_cert: bool = False) -> tuple[int, str]:
        return await asyncio.to_thread(self._get, listener, path, client_cert)

    def _get(self, listener: str, path: str, client_cert: bool) -> tuple[int, str]:
        port = self.ports[listener]
        conn: http.client.HTTPConnection
        if client_cert:
            context = ssl.create_default_context(cafile=self.pki.ca)
            context.load_cert_chain(self.pki.client.cert, self.pki.client.key)
            conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


def _posts(fault: FaultOpa) -> int:
    return sum(r.method == "POST" for r in fault.requests)


@pytest.fixture
async def stack(fault_opa: FaultOpa, pki: Pki, tmp_path: Path) -> AsyncIterator[MtlsStack]:
    tls = {"grpc_tls_cert": str(pki.server.cert), "grpc_tls_key": str(pki.server.key)}
    async with (
        running_sidecar(fault_opa.url, grpc_client_ca=str(pki.ca), require_tls_peer=True, **tls) as mtls,
        running_sidecar(fault_opa.url, **tls) as tls_only,
    ):
        config = render_mtls_config(
            pki, mtls_sidecar_port=mtls.sidecar.grpc_port, tls_sidecar_port=tls_only.sidecar.grpc_port
        )
        with running_envoy(config, tmp_path) as envoy:
            yield MtlsStack(envoy, envoy.listener_ports(), mtls, tls_only, pki)


async def test_mtls_check_is_allowed_with_the_client_principal(stack: MtlsStack, fault_opa: FaultOpa) -> None:
    status, body = await stack.get("mtls_ingress", "/orders", client_cert=True)
    assert (status, body) == (200, "upstream reached\n")
    [decision] = stack.mtls_sidecar.decisions()
    assert decision["outcome"] == "allow"
    assert decision["source_principal"] == CLIENT_SPIFFE_ID
    [post] = [r for r in fault_opa.requests if r.method == "POST"]
    source = post.json()["input"]["attributes"]["source"]
    assert source["principal"] == CLIENT_SPIFFE_ID
    assert source["certificate"].startswith("-----BEGIN%20CERTIFICATE-----")
    counters = stack.envoy.counters()
    assert counters["cluster.sidecar_mtls.ssl.handshake"] >= 1  # Envoy -> sidecar was TLS
    assert counters["http.mtls_ingress.ext_authz.ok"] == 1


async def test_require_tls_peer_denies_a_client_without_a_certificate(
    stack: MtlsStack, fault_opa: FaultOpa
) -> None:
    status, _ = await stack.get("plain_ingress", "/orders")
    assert status == 403
    [decision] = stack.mtls_sidecar.decisions()
    assert decision["reason"] == "missing_signal"
    assert "/attributes/source/principal" in decision["detail"]
    assert "source_principal" not in decision
    assert _posts(fault_opa) == 0  # refused before OPA was asked
    # The same sidecar still allows the client that has a certificate.
    status, _ = await stack.get("mtls_ingress", "/orders", client_cert=True)
    assert status == 200
    assert _posts(fault_opa) == 1


async def test_sidecar_refuses_envoy_without_a_client_certificate(
    stack: MtlsStack, fault_opa: FaultOpa
) -> None:
    status, _ = await stack.get("no_client_cert_ingress", "/orders")
    assert status == 503  # Envoy could not reach the sidecar: status_on_error, never an allow
    counters = stack.envoy.counters()
    assert counters["cluster.sidecar_mtls_no_client_cert.upstream_cx_connect_fail"] >= 1
    assert counters["http.no_client_cert_ingress.ext_authz.error"] == 1
    assert stack.mtls_sidecar.decisions() == []
    assert _posts(fault_opa) == 0


async def test_server_tls_only_link_allows(stack: MtlsStack, fault_opa: FaultOpa) -> None:
    status, body = await stack.get("tls_ingress", "/orders")
    assert (status, body) == (200, "upstream reached\n")
    [decision] = stack.tls_sidecar.decisions()
    assert decision["outcome"] == "allow"
    assert stack.envoy.counters()["cluster.sidecar_tls.ssl.handshake"] >= 1
    assert _posts(fault_opa) == 1
