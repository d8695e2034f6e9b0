"""What one client may cost an HTTP listener: header and body sizes, time and connections.

Two listeners, two sets of limits. The authorization listener (ext_authz HTTP
mode, the JSON check API) takes what an Envoy sends; the probe listener takes
what a kubelet or Prometheus sends, which is a few short GETs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.config import Settings


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int  # request line and all header lines of one request
    max_headers: int
    max_body_bytes: int
    max_connections: int
    # Connections taken beyond max_connections when every one of those is
    # answering a whole request: each is read and answered ``overloaded`` (a
    # recorded deny), then closed, where closing it unanswered would be an
    # error that a fail-open Envoy lets through.
    over_cap_connections: int
    header_timeout: float  # from a request's first byte to the end of its headers
    body_timeout: float  # from the end of the headers to the end of the body
    idle_timeout: float  # a kept-alive connection with no request


def authz_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        max_body_bytes=settings.http_max_body_bytes,
        max_connections=settings.http_max_connections,
        over_cap_connections=settings.http_max_connections,
        header_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
        idle_timeout=settings.http_idle_timeout,
    )


def probe_limits(settings: Settings) -> HttpLimits:
    """Fixed: a probe or a scrape is a GET of a few hundred bytes, and nothing
    else has business on this port."""
    return HttpLimits(
        max_header_bytes=16 << 10,
        max_headers=64,
        max_body_bytes=0,
        max_connections=32,
        over_cap_connections=0,  # a probe answers at once: a busy cap is not its load
        header_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
        idle_timeout=settings.http_idle_timeout,
    )
