"""The gRPC listener's certificate, key and client CA rotate without a restart,
under a steady load of checks over real gRPC: on a long-lived connection and on
a new connection per check. New handshakes get the new material within the
poller's second; a bad new file keeps the old material, is named in the log
and counted; no check fails at any point of a good rotation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from sidecar.config import ConfigError
from sidecar.tls import load_listener_material
from sidecar.tls_reload import MaterialError
from tests.check_requests import check_request
from tests.fault_opa import FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.operations.tls_files import (
    KeyDir,
    bundle,
    der,
    metric,
    served_certificate,
    wait_until,
    write_half,
    write_in_place,
)
from tests.tls.certs import CertPair, Pki, make_pki

# A busy shared machine, not a rotation, must not turn a check into opa_timeout.
_OPA_TIMEOUT = 1.0
# A channel of its own per check: gRPC would otherwise share one connection.
_NEW_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def next_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The issuer the certificates rotate to: another CA and its certificates."""
    return make_pki(tmp_path_factory.mktemp("next-pki"))


def _server_files(pair: CertPair) -> dict[str, Path]:
    return {"tls.crt": pair.cert, "tls.key": pair.key}


@dataclass
class Load:
    """Checks sent in a loop until stopped; every outcome recorded."""

    target: str
    trusted: Path
    client: CertPair | None = None  # which client certificate new connections present
    outcomes: list[str] = field(default_factory=list)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.trusted.read_bytes(),
            private_key=self.client.key.read_bytes() if self.client else None,
            certificate_chain=self.client.cert.read_bytes() if self.client else None,
        )

    async def _one(self, stub: AuthorizationStub) -> None:
        try:
            response = await stub.Check(check_request(), timeout=2.0)
            self.outcomes.append("allow" if response.status.code == 0 else f"deny {response.status.code}")
        except grpc.aio.AioRpcError as exc:
            self.outcomes.append(f"error {exc.code().name}")

    async def run(self, stop: asyncio.Event) -> None:
        async with grpc.aio.secure_channel(self.target, self.credentials()) as long_lived:
            stub = AuthorizationStub(long_lived)  # type: ignore[no-untyped-call]
            while not stop.is_set():
                await self._one(stub)
                creds = self.credentials()
                async with grpc.aio.secure_channel(self.target, creds, options=_NEW_CONNECTION) as fresh:
                    await self._one(AuthorizationStub(fresh))  # type: ignore[no-untyped-call]

    def failures(self) -> list[str]:
        return [o for o in self.outcomes if o != "allow"]


@contextlib.asynccontextmanager
async def under_load(load: Load, workers: int = 3) -> AsyncIterator[Load]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(load.run(stop)) for _ in range(workers)]
    try:
        await wait_until(lambda: len(load.outcomes) >= 20)
        yield load
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def _rejected(handle: SidecarHandle) -> float:
    expo = handle.sidecar.metrics.exposition()
    return metric(expo, "opa_sidecar_tls_reloads_total", material="grpc_listener", result="rejected")


def _loaded(handle: SidecarHandle) -> float:
    expo = handle.sidecar.metrics.exposition()
    return metric(expo, "opa_sidecar_tls_reloads_total", material="grpc_listener", result="loaded")


def _flagged(handle: SidecarHandle) -> float:
    expo = handle.sidecar.metrics.exposition()
    return metric(expo, "opa_sidecar_tls_files_rejected", material="grpc_listener")


async def _presents(handle: SidecarHandle, trusted: Path, client: CertPair | None = None) -> bytes:
    pair = (client.cert, client.key) if client else None
    return await asyncio.to_thread(served_certificate, handle.sidecar.grpc_port, trusted, pair)


def _serving_tls(opa_url: str, keys: KeyDir, **overrides: Any) -> AbstractAsyncContextManager[SidecarHandle]:
    """A sidecar serving gRPC over TLS with the certificate and key in ``keys``."""
    return running_sidecar(
        opa_url,
        opa_timeout=_OPA_TIMEOUT,
        grpc_tls_cert=keys.path("tls.crt"),
        grpc_tls_key=keys.path("tls.key"),
        **overrides,
    )


@pytest.fixture
def trusted(pki: Pki, next_pki: Pki, tmp_path: Path) -> Path:
    """What clients trust while the server certificate moves to the next CA."""
    return bundle(tmp_path / "trusted.pem", pki.ca, next_pki.ca)


async def test_metrics_exist_at_zero_before_any_rotation(
    fault_opa: FaultOpa, pki: Pki, tmp_path: Path
) -> None:
    keys = KeyDir(tmp_path / "keys", _server_files(pki.server))
    async with _serving_tls(fault_opa.url, keys) as handle:
        expo = handle.sidecar.metrics.exposition()
    for material in ("grpc_listener", "opa_client"):
        assert metric(expo, "opa_sidecar_tls_files_rejected", material=material) == 0
        for result in ("loaded", "rejected"):
            assert metric(expo, "opa_sidecar_tls_reloads_total", material=material, result=result) == 0


async def test_certificate_and_key_swapped_together_are_served_without_a_failed_check(
    fault_opa: FaultOpa, pki: Pki, next_pki: Pki, trusted: Path, tmp_path: Path
) -> None:
    keys = KeyDir(tmp_path / "keys", _server_files(pki.server))
    async with _serving_tls(fault_opa.url, keys) as handle:
        assert await _presents(handle, trusted) == der(pki.server.cert)
        async with under_load(Load(f"127.0.0.1:{handle.sidecar.grpc_port}", trusted)) as load:
            keys.rotate(_server_files(next_pki.server))
            took = await wait_until(lambda: _loaded(handle) == 1)
            assert await _presents(handle, trusted) == der(next_pki.server.cert)
            before = len(load.outcomes)
            await wait_until(lambda: len(load.outcomes) >= before + 20)
        assert took < 2.5  # looked at once a second
        assert _rejected(handle) == 0
        assert _flagged(handle) == 0
    assert load.failures() == []
    assert len(load.outcomes) >= 40


@pytest.mark.parametrize(("half", "flag"), [("tls.crt", "--grpc-tls-cert"), ("tls.key", "--grpc-tls-key")])
async def test_a_half_written_file_keeps_the_old_pair_until_the_write_completes(
    fault_opa: FaultOpa,
    pki: Pki,
    next_pki: Pki,
    trusted: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    half: str,
    flag: str,
) -> None:
    keys = KeyDir(tmp_path / "keys", _server_files(pki.server))
    new = _server_files(next_pki.server)
    caplog.set_level(logging.INFO, logger="sidecar.tls_reload")
    async with _serving_tls(fault_opa.url, keys) as handle:
        async with under_load(Load(f"127.0.0.1:{handle.sidecar.grpc_port}", trusted)) as load:
            write_half(keys.path(half), new[half])
            await wait_until(lambda: _rejected(handle) == 1)
            assert _flagged(handle) == 1
            [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert f"{flag} {keys.path(half)}" in warning
            assert "keeps its TLS material" in warning
            # New handshakes still get the old, whole pair.
            assert await _presents(handle, trusted) == der(pki.server.cert)
            before = len(load.outcomes)
            await wait_until(lambda: len(load.outcomes) >= before + 20)

            # The writer finishes (file by file, so the pair may be seen mismatched in between).
            write_in_place(keys.path("tls.crt"), new["tls.crt"])
            write_in_place(keys.path("tls.key"), new["tls.key"])
            await wait_until(lambda: _flagged(handle) == 0)
            assert await _presents(handle, trusted) == der(next_pki.server.cert)
        assert _loaded(handle) == 1
    assert load.failures() == []


async def test_client_ca_rotation_refuses_the_old_issuer_on_new_connections(
    fault_opa: FaultOpa, pki: Pki, next_pki: Pki, tmp_path: Path
) -> None:
    keys = KeyDir(tmp_path / "keys", {**_server_files(pki.server), "ca.crt": pki.ca})
    both = bundle(tmp_path / "both-cas.pem", pki.ca, next_pki.ca)
    async with _serving_tls(fault_opa.url, keys, grpc_client_ca=keys.path("ca.crt")) as handle:
        target = f"127.0.0.1:{handle.sidecar.grpc_port}"

        async def fresh_check(client: CertPair) -> str:
            probe = Load(target, pki.ca, client)
            async with grpc.aio.secure_channel(target, probe.credentials(), options=_NEW_CONNECTION) as ch:
                await probe._one(AuthorizationStub(ch))  # type: ignore[no-untyped-call]
            return probe.outcomes[0]

        assert await fresh_check(next_pki.client) == "error UNAVAILABLE"  # not trusted yet
        async with under_load(Load(target, pki.ca, pki.client)) as load:
            # The usual order: trust both, move the clients, drop the old issuer.
            keys.rotate({**_server_files(pki.server), "ca.crt": both})
            await wait_until(lambda: _loaded(handle) == 1)
            assert await fresh_check(next_pki.client) == "allow"
            assert await fresh_check(pki.client) == "allow"
            load.client = next_pki.client
            keys.rotate({**_server_files(pki.server), "ca.crt": next_pki.ca})
            await wait_until(lambda: _loaded(handle) == 2)
            assert await fresh_check(pki.client) == "error UNAVAILABLE"
            assert await fresh_check(next_pki.client) == "allow"
            before = len(load.outcomes)
            await wait_until(lambda: len(load.outcomes) >= before + 20)
    assert load.failures() == []


async def test_a_broken_client_ca_keeps_the_old_one(
    fault_opa: FaultOpa, pki: Pki, next_pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyDir(tmp_path / "keys", {**_server_files(pki.server), "ca.crt": pki.ca})
    async with _serving_tls(fault_opa.url, keys, grpc_client_ca=keys.path("ca.crt")) as handle:
        target = f"127.0.0.1:{handle.sidecar.grpc_port}"
        async with under_load(Load(target, pki.ca, pki.client)) as load:
            write_half(keys.path("ca.crt"), next_pki.ca)
            await wait_until(lambda: _rejected(handle) == 1)
            assert any(f"--grpc-client-ca {keys.path('ca.crt')}" in r.getMessage() for r in caplog.records)
            before = len(load.outcomes)
            await wait_until(lambda: len(load.outcomes) >= before + 20)
        assert _flagged(handle) == 1
    assert load.failures() == []  # new connections with the old CA's certificate still accepted


@pytest.mark.parametrize(
    ("spoil", "flag", "why"),
    [
        ("half_cert", "--grpc-tls-cert", "not complete PEM certificates"),
        ("half_key", "--grpc-tls-key", "not a complete PEM private key"),
        ("other_key", "--grpc-tls-key", "does not match --grpc-tls-cert"),
        ("empty_ca", "--grpc-client-ca", "empty"),
        ("fifo_key", "--grpc-tls-key", "not a regular file"),
        ("missing_ca", "--grpc-client-ca", "cannot read"),
    ],
)
def test_each_bad_file_is_named_with_what_is_wrong(
    pki: Pki, next_pki: Pki, tmp_path: Path, spoil: str, flag: str, why: str
) -> None:
    cert, key, ca = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    write_in_place(cert, pki.server.cert)
    write_in_place(key, pki.server.key)
    write_in_place(ca, pki.ca)
    bad = {"cert": cert, "key": key, "ca": ca}[spoil.split("_")[1]]
    if spoil.startswith("half"):
        write_half(bad, pki.server.cert if bad == cert else pki.server.key)
    elif spoil == "other_key":
        write_in_place(key, next_pki.server.key)
    elif spoil == "empty_ca":
        ca.write_bytes(b"\n")
    elif spoil == "fifo_key":
        key.unlink()
        os.mkfifo(key)  # no writer: a blocking open would wait forever
    else:
        ca.unlink()
    with pytest.raises(MaterialError) as caught:
        load_listener_material(str(cert), str(key), str(ca))
    assert str(caught.value).startswith(f"{flag} {bad}: ")
    assert why in str(caught.value)
    assert "BEGIN" not in str(caught.value)  # never the file's content


async def test_a_bad_file_at_start_stops_the_start(fault_opa: FaultOpa, pki: Pki, tmp_path: Path) -> None:
    write_half(tmp_path / "tls.key", pki.server.key)
    with pytest.raises(ConfigError, match=f"--grpc-tls-key {tmp_path / 'tls.key'}: "):
        async with running_sidecar(
            fault_opa.url, grpc_tls_cert=str(pki.server.cert), grpc_tls_key=str(tmp_path / "tls.key")
        ):
            pass
