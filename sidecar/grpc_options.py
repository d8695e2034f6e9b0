"""Limits of the gRPC listener, chosen with a fail-open Envoy in view.

Whatever gRPC itself refuses reaches Envoy as an error status, which
``failure_mode_allow: true`` turns into an allow. So no limit here may be
reachable by a legitimate Envoy: a message Envoy can send is always received
and, if too large, denied by the handler (``--max-request-bytes``). The limits
only bound what a hostile local client can make the process hold.
"""

from __future__ import annotations

# Envoy caps max_request_headers_kb at 8192 KiB; a CheckRequest also carries
# addresses, the peer certificate and metadata besides the headers and body.
ENVOY_MAX_HEADER_BYTES = 8192 * 1024
ATTRIBUTES_ALLOWANCE_BYTES = 1 << 20

# Streams one connection may hold, each ~20 KiB inside gRPC while its answer
# waits. Envoy opens another connection when one is full, so this never makes
# a check wait, with one exception: on a connection so new that Envoy has not
# yet read the server's SETTINGS (well under a millisecond on loopback), the
# streams over the limit are refused, an error a fail-open Envoy lets through;
# the limit is high enough that real bursts do not reach it in that moment.
# It is not tied to --max-inflight: a client held at a stream limit queues its
# calls, where the sidecar should deny them at once as overloaded.
MAX_STREAMS_PER_CONNECTION = 256
# Every connection is asked to go away (GOAWAY; Envoy opens a new one) after a
# minute, and whatever it still holds after the grace (answers its client never
# reads) is dropped with it. The grace outlasts any check (--opa-timeout), so
# Envoy's checks on an old connection are all answered.
MAX_CONNECTION_AGE_MS = 60_000
AGE_GRACE_BEYOND_A_CHECK_MS = 1_000
MAX_CONNECTION_IDLE_MS = 300_000
MAX_PENDING_CALLS = 1 << 30


def receive_limit(max_request_bytes: int) -> int:
    """The largest message gRPC receives: any CheckRequest a legitimate Envoy
    can build with a body up to ``max_request_bytes`` stays below it."""
    return max_request_bytes + ENVOY_MAX_HEADER_BYTES + ATTRIBUTES_ALLOWANCE_BYTES


def server_options(max_request_bytes: int, opa_timeout: float, *, reuse_port: bool) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", receive_limit(max_request_bytes)),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # gRPC cancels new calls once more than 1000 wait for the handler (at
        # random, all of them past 3000): a CANCELLED status that a fail-open
        # Envoy lets through, which any burst or flood of calls could cause.
        # Calls wait instead; the stream limits bound how many there can be.
        ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", int(opa_timeout * 1000) + AGE_GRACE_BEYOND_A_CHECK_MS),
        ("grpc.max_connection_idle_ms", MAX_CONNECTION_IDLE_MS),
        # A client pinging more often than every 5 minutes without calls gets GOAWAY
        # at the third ping (gRPC's defaults, kept on purpose).
        ("grpc.http2.min_ping_interval_without_data_ms", 300_000),
        ("grpc.http2.max_ping_strikes", 2),
        # Workers share the ports; a single process must own its port.
        ("grpc.so_reuseport", int(reuse_port)),
    ]
