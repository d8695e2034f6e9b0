"""The OPA transport's protocol object, fed bytes directly so each case is exact."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.opa.http1 import ProtocolError, Response, TransportError, _Connection

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"result":true}\n'


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


async def exchange(*chunks: bytes, eof: bool = False) -> tuple[Response, bool, _Transport]:
    conn = _Connection()
    transport = _Transport()
    conn.transport = transport  # type: ignore[assignment]
    pending = asyncio.ensure_future(conn.exchange(b"POST / HTTP/1.1\r\n\r\n", 1 << 20))
    await asyncio.sleep(0)
    for chunk in chunks:
        conn.data_received(chunk)
    if eof:
        conn.eof_received()
    response, reusable = await pending
    return response, reusable, transport


async def test_one_response_keeps_the_connection() -> None:
    response, reusable, transport = await exchange(OK[:30], OK[30:])
    assert (response.status, bytes(response.body), reusable, transport.closed) == (
        200,
        b'{"result":true}\n',
        True,
        False,
    )


@pytest.mark.parametrize(
    "spare",
    [
        b'HTTP/1.1 200 OK\r\nX-Spare: 1\r\n\r\n{"result":false}\n',  # no framing: would append its body
        OK,
    ],
)
async def test_a_spare_response_in_the_same_read_leaves_the_answer_intact_and_drops_the_connection(
    spare: bytes,
) -> None:
    response, reusable, transport = await exchange(OK + spare)
    assert bytes(response.body) == b'{"result":true}\n'
    assert "x-spare" not in response.headers
    assert (reusable, transport.closed) == (False, True)


async def test_eof_mid_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        await exchange(OK[:-5], eof=True)


async def test_eof_before_any_byte_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        await exchange(eof=True)


async def test_a_200_without_length_framing_is_refused() -> None:
    with pytest.raises(ProtocolError):
        await exchange(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"result":true}', eof=True)
