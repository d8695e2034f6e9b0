"""Real Envoy keeps working while the sidecar's listener certificate rotates,
and is refused once the client CA rotates away from the issuer of Envoy's own
client certificate. One cluster makes a new connection per check (every check
a handshake), the other keeps Envoy's usual long-lived connection."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import string
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fault_opa import FaultOpa
from tests.fixtures.sidecar import running_sidecar
from tests.operations.tls_files import KeyDir, bundle, der, metric, served_certificate, wait_until
from tests.tls.certs import Pki, make_pki
from tests.tls.envoy import Envoy, running_envoy

TEMPLATE = Path(__file__).parent.parent / "tls" / "envoy-rotation.yaml"
LISTENERS = ("fresh_ingress", "pooled_ingress")


@pytest.fixture(scope="module")
def next_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("next-pki"))


@dataclass
class TrafficThroughEnvoy:
    """Two clients per listener sending GETs until stopped; (time, listener, status) each."""

    ports: dict[str, int]
    seen: list[tuple[float, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _client(self, listener: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[listener], timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/orders")
                response = conn.getresponse()
                response.read()
                self.seen.append((time.monotonic(), listener, response.status))
            except (OSError, http.client.HTTPException):
                self.seen.append((time.monotonic(), listener, 0))
                conn.close()
            time.sleep(0.005)
        conn.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        threads = [
            threading.Thread(target=self._client, args=(name,)) for name in LISTENERS for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            self._stop.set()
            # Joined off the loop: the sidecar on this loop answers the last checks meanwhile.
            for thread in threads:
                await asyncio.to_thread(thread.join, 10)

    def statuses(self, listener: str, since: float = 0.0, until: float = float("inf")) -> list[int]:
        return [s for t, name, s in self.seen if name == listener and since <= t < until]

    async def more(self, n: int = 20) -> None:
        counts = {name: len(self.statuses(name)) for name in LISTENERS}
        await wait_until(lambda: all(len(self.statuses(name)) >= counts[name] + n for name in LISTENERS))


def _config(pki: Pki, trusted: Path, sidecar_port: int) -> str:
    return string.Template(TEMPLATE.read_text()).substitute(
        CLIENT_CERT=pki.client.cert,
        CLIENT_KEY=pki.client.key,
        TRUSTED=trusted,
        SIDECAR_PORT=sidecar_port,
    )


async def test_envoy_keeps_working_across_a_rotation_and_is_refused_after_a_ca_rotation(
    fault_opa: FaultOpa, pki: Pki, next_pki: Pki, tmp_path: Path
) -> None:
    keys = KeyDir(
        tmp_path / "keys", {"tls.crt": pki.server.cert, "tls.key": pki.server.key, "ca.crt": pki.ca}
    )
    trusted = bundle(tmp_path / "trusted.pem", pki.ca, next_pki.ca)
    async with running_sidecar(
        fault_opa.url,
        opa_timeout=1.0,  # within Envoy's 2 s; a busy machine, not a rotation, must not deny
        grpc_tls_cert=keys.path("tls.crt"),
        grpc_tls_key=keys.path("tls.key"),
        grpc_client_ca=keys.path("ca.crt"),
    ) as handle:
        port = handle.sidecar.grpc_port

        def loaded() -> float:
            expo = handle.sidecar.metrics.exposition()
            return metric(expo, "opa_sidecar_tls_reloads_total", material="grpc_listener", result="loaded")

        with running_envoy(_config(pki, trusted, port), tmp_path) as envoy:
            traffic = TrafficThroughEnvoy(envoy.listener_ports())
            async with traffic.running():
                await traffic.more()
                handshakes = _counter(envoy, "cluster.sidecar_fresh.ssl.handshake")

                # 1. The sidecar's certificate and key move to the next issuer.
                keys.rotate(
                    {"tls.crt": next_pki.server.cert, "tls.key": next_pki.server.key, "ca.crt": pki.ca}
                )
                await wait_until(lambda: loaded() == 1)
                client = (pki.client.cert, pki.client.key)
                assert await asyncio.to_thread(served_certificate, port, trusted, client) == der(
                    next_pki.server.cert
                )
                await traffic.more()
                ca_rotated = time.monotonic()

                # 2. The client CA moves to the next issuer: Envoy's certificate is from the old one.
                keys.rotate(
                    {"tls.crt": next_pki.server.cert, "tls.key": next_pki.server.key, "ca.crt": next_pki.ca}
                )
                await wait_until(lambda: loaded() == 2)
                await asyncio.sleep(0.2)  # checks whose handshake came before it
                refused_from = time.monotonic()
                await traffic.more()
            counters = envoy.counters()
    for listener in LISTENERS:
        assert set(traffic.statuses(listener, until=ca_rotated)) == {200}, listener
    assert counters["cluster.sidecar_fresh.ssl.handshake"] > handshakes + 20  # checks handshook anew
    # New handshakes present a certificate from an issuer no longer trusted.
    assert set(traffic.statuses("fresh_ingress", since=refused_from)) == {503}
    assert counters["http.fresh_ingress.ext_authz.error"] > 0
    # The connection Envoy already had stays up (gRPC asks it to go away within a minute).
    assert set(traffic.statuses("pooled_ingress")) == {200}
    assert counters["http.pooled_ingress.ext_authz.ok"] == len(traffic.statuses("pooled_ingress"))


def _counter(envoy: Envoy, name: str) -> int:
    return envoy.counters().get(name, 0)
