"""TLS and mutual TLS on the gRPC listener, in process, over real gRPC channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from tests.check_requests import check_request
from tests.fault_opa import FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.tls.certs import CertPair, Pki


def _credentials(ca: Path, client: CertPair | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )


async def _check_over(
    handle: SidecarHandle, credentials: grpc.ChannelCredentials, *, target_host: str = "127.0.0.1"
) -> CheckResponse:
    target = f"{target_host}:{handle.sidecar.grpc_port}"
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        response: CheckResponse = await stub.Check(check_request(), timeout=2.0)
        return response


@pytest.fixture
async def tls_sidecar(fault_opa: FaultOpa, pki: Pki) -> AsyncIterator[SidecarHandle]:
    async with running_sidecar(
        fault_opa.url, grpc_tls_cert=str(pki.server.cert), grpc_tls_key=str(pki.server.key)
    ) as handle:
        yield handle


@pytest.fixture
async def mtls_sidecar(fault_opa: FaultOpa, pki: Pki) -> AsyncIterator[SidecarHandle]:
    async with running_sidecar(
        fault_opa.url,
        grpc_tls_cert=str(pki.server.cert),
        grpc_tls_key=str(pki.server.key),
        grpc_client_ca=str(pki.ca),
    ) as handle:
        yield handle


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_listener_answers_a_verifying_client(
    tls_sidecar: SidecarHandle, fault_opa: FaultOpa, pki: Pki, host: str
) -> None:
    response = await _check_over(tls_sidecar, _credentials(pki.ca), target_host=host)
    assert response.status.code == 0
    assert fault_opa.count == 1


async def test_tls_listener_refuses_plaintext(tls_sidecar: SidecarHandle, fault_opa: FaultOpa) -> None:
    # The fixture's own channel is plaintext: a TLS listener must not answer it.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tls_sidecar.check(check_request(), timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert fault_opa.count == 0


async def test_client_that_does_not_trust_the_ca_cannot_connect(tls_sidecar: SidecarHandle, pki: Pki) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check_over(tls_sidecar, _credentials(pki.rogue_ca))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_accepts_a_client_certificate_from_the_ca(
    mtls_sidecar: SidecarHandle, fault_opa: FaultOpa, pki: Pki
) -> None:
    response = await _check_over(mtls_sidecar, _credentials(pki.ca, pki.client))
    assert response.status.code == 0
    assert [e["outcome"] for e in mtls_sidecar.decisions()] == ["allow"]
    assert fault_opa.count == 1


@pytest.mark.parametrize("client", ["none", "rogue"])
async def test_mtls_rejects_a_client_without_a_trusted_certificate(
    mtls_sidecar: SidecarHandle, fault_opa: FaultOpa, pki: Pki, client: str
) -> None:
    pair = pki.rogue_client if client == "rogue" else None
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check_over(mtls_sidecar, _credentials(pki.ca, pair))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # The handshake failed: no check ran, nothing was logged, OPA was not asked.
    assert mtls_sidecar.decisions() == []
    assert fault_opa.count == 0
