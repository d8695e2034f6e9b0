"""A minimal OPA behind TLS: answers every Data API POST with ``{"result": true}``
and ``GET /health`` with 200, and records what each request carried, including
the client certificate it saw. Runs in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.tls.certs import CertPair


@dataclass(frozen=True)
class SeenRequest:
    request_line: str
    headers: dict[str, str]  # lower-cased names
    peer_certificate: dict[str, Any] | None  # ssl's decoded form; None without one


@dataclass
class TlsOpa:
    url: str
    # The listener's context: loading another certificate into it changes what new handshakes get.
    context: ssl.SSLContext
    requests: list[SeenRequest] = field(default_factory=list)


async def _serve(opa: TlsOpa, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peercert") or None
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, sep, value in (line.partition(":") for line in lines[1:])
                if sep
            }
            await reader.readexactly(int(headers.get("content-length", "0")))
            opa.requests.append(SeenRequest(lines[0], headers, peer))
            body = b'{"result":true}' if lines[0].startswith("POST") else b"{}"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_opa(server: CertPair, *, client_ca: str | None = None) -> AsyncIterator[TlsOpa]:
    """Listen on 127.0.0.1 with `server`'s certificate; with `client_ca`, a client
    certificate signed by it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    opa = TlsOpa("", context)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve(opa, reader, writer)

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context, ssl_handshake_timeout=2.0)
    opa.url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield opa
    finally:
        listener.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), 1.0)
