"""The gRPC listener's limits: whatever gRPC itself refuses is an error status that a
fail-open Envoy lets through, so a legitimate Envoy must never meet one, and a
hostile client must not be able to make one happen to Envoy's calls."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from sidecar._proto.envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from sidecar._proto.envoy.service.auth.v3.external_auth_pb2_grpc import AuthorizationStub
from sidecar.envoy.peer_guard import MIN_UNREAD_WHEN_STALLED, STALL_SECONDS
from sidecar.grpc_options import ENVOY_MAX_HEADER_BYTES, receive_limit
from tests.check_requests import check_request
from tests.fault_opa import Behaviour, FaultOpa
from tests.fixtures.sidecar import running_sidecar
from tests.hostile.h2_attackers import CHECK_PATH, check_message

PERMISSION_DENIED = 7
SMALL_LIMIT = 1024  # --max-request-bytes in these tests


def _request_of(size: int) -> CheckRequest:
    """A CheckRequest of about `size` bytes, most of it one header, as Envoy would send."""
    return check_request("GET", "/big", headers={"x-big": "a" * size})


async def test_the_largest_message_an_envoy_can_send_is_received_and_denied(fault_opa: FaultOpa) -> None:
    # Envoy's largest headers (max_request_headers_kb at its 8192 KiB ceiling) with a body
    # at --max-request-bytes: the handler's deny, not gRPC's error.
    async with running_sidecar(fault_opa.url, max_request_bytes=SMALL_LIMIT) as sidecar:
        response = await sidecar.check(_request_of(ENVOY_MAX_HEADER_BYTES + SMALL_LIMIT), timeout=10)
        [decision] = sidecar.decisions()

    assert response.status.code == PERMISSION_DENIED
    assert response.denied_response.status.code == 413
    assert decision["reason"] == "bad_request"
    assert fault_opa.count == 0


async def test_an_absurd_message_is_refused_by_grpc_before_it_is_held(fault_opa: FaultOpa) -> None:
    async with running_sidecar(fault_opa.url, max_request_bytes=SMALL_LIMIT) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sidecar.check(_request_of(receive_limit(SMALL_LIMIT) + 1), timeout=10)
        decisions = sidecar.decisions()

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert decisions == []


async def test_a_flood_of_calls_gets_answers_never_a_cancelled_status(fault_opa: FaultOpa) -> None:
    # gRPC's own default cancels calls once over 1000 wait for the handler: a burst
    # like this one got CANCELLED statuses, which a fail-open Envoy lets through.
    fault_opa.set(Behaviour.delayed(0.05))
    async with running_sidecar(fault_opa.url) as sidecar:
        # Connections of their own: each channel gets its own subchannel.
        separate = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(sidecar.sidecar.grpc_target, options=separate) for _ in range(16)
        ]
        stubs = [AuthorizationStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
        request = check_request()
        calls = [stub.Check(request, timeout=30) for stub in stubs for _ in range(250)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for channel in channels:
            await channel.close(None)
        reasons = {d.get("reason") for d in sidecar.decisions()}

    errors = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert errors == []
    assert all(isinstance(r, CheckResponse) for r in results)
    assert reasons <= {None, "overloaded", "opa_timeout"}


def _stalled_client(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sock.sendall(conn.data_to_send())
    return sock, conn


def _open_stream(sock: socket.socket, conn: h2.connection.H2Connection) -> int:
    stream_id = conn.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", CHECK_PATH),
        (":authority", "sidecar"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    conn.send_headers(stream_id, headers)
    conn.send_data(stream_id, check_message(), end_stream=True)
    sock.sendall(conn.data_to_send())
    return stream_id


def _events(sock: socket.socket, conn: h2.connection.H2Connection, seconds: float) -> list[h2.events.Event]:
    events: list[h2.events.Event] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            data = sock.recv(65536)
            if not data:
                break
            events += conn.receive_data(data)
            with contextlib.suppress(OSError):  # the server may have closed its side
                sock.sendall(conn.data_to_send())  # settings and ping acks; never a window update
    return events


async def test_a_connection_that_reads_no_answers_gets_bare_statuses_that_hold_nothing(
    fault_opa: FaultOpa,
) -> None:
    async with running_sidecar(fault_opa.url) as sidecar:
        sock, conn = await asyncio.to_thread(_stalled_client, sidecar.sidecar.grpc_port)
        try:
            first = [
                await asyncio.to_thread(_open_stream, sock, conn) for _ in range(MIN_UNREAD_WHEN_STALLED)
            ]
            early = await asyncio.to_thread(_events, sock, conn, STALL_SECONDS + 0.3)
            late = await asyncio.to_thread(_open_stream, sock, conn)
            after = await asyncio.to_thread(_events, sock, conn, 1.0)
        finally:
            sock.close()
        decisions = sidecar.decisions()

    # The first answers cannot leave (a zero window): headers only, no message, no end.
    assert not [e for e in early if isinstance(e, h2.events.StreamEnded) and e.stream_id in first]
    # The later call ends at once with trailers alone: nothing waits for the window.
    [trailers] = [e for e in after if isinstance(e, h2.events.ResponseReceived) and e.stream_id == late]
    assert dict(trailers.headers)[b"grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]).encode()
    assert [e for e in after if isinstance(e, h2.events.StreamEnded) and e.stream_id == late]
    stalled = [d for d in decisions if d.get("detail") == "the client leaves its answers unread"]
    assert len(stalled) == 1
    assert fault_opa.count == MIN_UNREAD_WHEN_STALLED


async def test_a_ping_flood_is_answered_with_goaway(fault_opa: FaultOpa) -> None:
    def flood(port: int) -> list[h2.events.Event]:
        sock, conn = _stalled_client(port)
        try:
            with contextlib.suppress(OSError):  # closed by the server once it had enough
                for n in range(10):
                    conn.ping(n.to_bytes(8, "big"))
                    sock.sendall(conn.data_to_send())
                    time.sleep(0.01)
            return _events(sock, conn, 2.0)
        finally:
            sock.close()

    async with running_sidecar(fault_opa.url) as sidecar:
        events = await asyncio.to_thread(flood, sidecar.sidecar.grpc_port)

    [goaway] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.additional_data == b"too_many_pings"
