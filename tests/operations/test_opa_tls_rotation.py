"""The OPA client's CA and client certificate rotate without a restart, under a
steady load of checks: new connections to OPA use the new material (pooled
connections made with the old one are not reused), checks in flight finish,
and a bad new file keeps the old material, named in the log and counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sidecar.envoy.response import PERMISSION_DENIED
from tests.check_requests import check_request
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.operations.tls_files import KeyDir, bundle, metric, wait_until, write_half
from tests.operations.tls_opa import TlsOpa, tls_opa
from tests.tls.certs import CLIENT_SPIFFE_ID, OTHER_SPIFFE_ID, CertPair, Pki, make_pki


@pytest.fixture(scope="module")
def next_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("next-pki"))


def _files(ca: Path, client: CertPair) -> dict[str, Path]:
    return {"ca.crt": ca, "tls.crt": client.cert, "tls.key": client.key}


@dataclass
class Rig:
    opa: TlsOpa
    handle: SidecarHandle
    keys: KeyDir
    outcomes: list[str] = field(default_factory=list)

    def count(self, result: str) -> float:
        expo = self.handle.sidecar.metrics.exposition()
        return metric(expo, "opa_sidecar_tls_reloads_total", material="opa_client", result=result)

    def flagged(self) -> float:
        expo = self.handle.sidecar.metrics.exposition()
        return metric(expo, "opa_sidecar_tls_files_rejected", material="opa_client")

    def identities(self) -> list[str | None]:
        """The client certificate's URI SAN on each request OPA received, in order."""
        return [
            next((v for k, v in r.peer_certificate["subjectAltName"] if k == "URI"), None)
            if r.peer_certificate
            else None
            for r in self.opa.requests
        ]

    async def _send(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            response = await self.handle.check(check_request())
            self.outcomes.append("allow" if response.status.code == 0 else f"deny {response.status.code}")

    async def more_checks(self, n: int = 20) -> None:
        before = len(self.outcomes)
        await wait_until(lambda: len(self.outcomes) >= before + n)

    @contextlib.asynccontextmanager
    async def under_load(self, senders: int = 4) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self._send(stop)) for _ in range(senders)]
        try:
            await self.more_checks()
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)


@pytest.fixture
async def rig(pki: Pki, tmp_path: Path) -> AsyncIterator[Rig]:
    keys = KeyDir(tmp_path / "opa-keys", _files(pki.ca, pki.client))
    async with (
        tls_opa(pki.server, client_ca=str(pki.ca)) as opa,
        running_sidecar(
            opa.url,
            opa_ca_file=keys.path("ca.crt"),
            opa_client_cert=keys.path("tls.crt"),
            opa_client_key=keys.path("tls.key"),
            opa_timeout=1.0,  # a handshake on a busy 2-core machine, not a rotation, must not deny
        ) as handle,
    ):
        yield Rig(opa, handle, keys)


async def test_client_certificate_rotation_reaches_opa_on_new_connections(rig: Rig, pki: Pki) -> None:
    async with rig.under_load():
        rig.keys.rotate(_files(pki.ca, pki.other_client))
        took = await wait_until(lambda: rig.count("loaded") == 1)
        await wait_until(lambda: rig.identities()[-1] == OTHER_SPIFFE_ID)
        seen = len(rig.opa.requests)
        await rig.more_checks()
    assert took < 2.5
    identities = rig.identities()
    assert identities[0] == CLIENT_SPIFFE_ID
    # Once the first request went out with the new certificate, no pooled
    # connection with the old one was reused.
    assert set(identities[seen:]) == {OTHER_SPIFFE_ID}
    assert [o for o in rig.outcomes if o != "allow"] == []
    assert rig.count("rejected") == 0


async def test_ca_rotation_follows_opa_to_a_new_issuer_and_drops_the_old(
    rig: Rig, pki: Pki, next_pki: Pki, tmp_path: Path
) -> None:
    both = bundle(tmp_path / "both-cas.pem", pki.ca, next_pki.ca)
    async with rig.under_load():
        rig.keys.rotate(_files(both, pki.client))  # trust both issuers
        await wait_until(lambda: rig.count("loaded") == 1)
        rig.opa.context.load_cert_chain(next_pki.server.cert, next_pki.server.key)  # OPA moves
        await rig.more_checks()
        rig.keys.rotate(_files(next_pki.ca, pki.client))  # the old issuer is dropped
        await wait_until(lambda: rig.count("loaded") == 2)
        await rig.more_checks()
    assert [o for o in rig.outcomes if o != "allow"] == []

    # An OPA still presenting the old issuer's certificate is refused now.
    rig.opa.context.load_cert_chain(pki.server.cert, pki.server.key)
    rig.handle.sidecar.opa.close()  # no pooled connection: the next check handshakes
    response = await rig.handle.check(check_request())
    assert response.status.code == PERMISSION_DENIED
    assert rig.handle.decisions()[-1]["reason"] == "opa_unreachable"


@pytest.mark.parametrize(
    ("name", "flag"),
    [("ca.crt", "--opa-ca-file"), ("tls.crt", "--opa-client-cert"), ("tls.key", "--opa-client-key")],
)
async def test_a_half_written_file_keeps_the_old_material(
    rig: Rig, next_pki: Pki, caplog: pytest.LogCaptureFixture, name: str, flag: str
) -> None:
    source = {"ca.crt": next_pki.ca, "tls.crt": next_pki.client.cert, "tls.key": next_pki.client.key}[name]
    async with rig.under_load():
        write_half(rig.keys.path(name), source)
        await wait_until(lambda: rig.count("rejected") == 1)
        assert rig.flagged() == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"{flag} {rig.keys.path(name)}" in w and "opa_client keeps" in w for w in warnings)
        rig.handle.sidecar.opa.close()  # new connections from here: they use the old, whole material
        await rig.more_checks()
    assert [o for o in rig.outcomes if o != "allow"] == []
    assert set(rig.identities()) == {CLIENT_SPIFFE_ID}
    assert rig.count("loaded") == 0
