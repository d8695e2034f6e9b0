"""Which Envoy TLS settings make `--require-tls-peer` mean something, on real Envoy.

Envoy sets the peer principal from whatever client certificate its TLS settings let
through; the sidecar cannot tell a verified one from an unverified one. One Envoy, one
listener per setting, each in front of the same sidecar (`--require-tls-peer`, an
allow-all OPA), and four client certificates: a good one, one with the same SPIFFE ID
from a CA nobody trusts, an expired one, and one for another SPIFFE ID.

The trustworthy listener refuses all but the good one at the handshake. Each weakened
listener lets a forged or stale identity through as a principal that meets the guard,
which is why the README lists these settings.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fault_opa import FaultOpa
from tests.fixtures.sidecar import SidecarHandle, running_sidecar
from tests.tls.certs import CLIENT_SPIFFE_ID, OTHER_SPIFFE_ID, CertPair, Pki
from tests.tls.envoy import Envoy, running_envoy

# The validation_context of each listener's DownstreamTlsContext (flow-style YAML),
# besides a server certificate and `require_client_certificate: true`.
LISTENERS = {
    "trusted": "{ trusted_ca: { filename: '${CA}' } }",
    "accept_untrusted": "{ trusted_ca: { filename: '${CA}' }, trust_chain_verification: ACCEPT_UNTRUSTED }",
    "allow_expired": "{ trusted_ca: { filename: '${CA}' }, allow_expired_certificate: true }",
    "pinned_san": (
        "{ trusted_ca: { filename: '${CA}' }, match_typed_subject_alt_names: "
        f"[ {{ san_type: URI, matcher: {{ exact: '{CLIENT_SPIFFE_ID}' }} }} ] }}"
    ),
    # Client certificates "required" with nothing to verify them against: Envoy starts
    # (it refuses a SAN pin without a trusted CA, not this) but asks for no certificate.
    "no_trusted_ca": "{}",
}

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
LISTENER = """\
  - name: ${NAME}
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: "${SERVER_CERT}" }
              private_key: { filename: "${SERVER_KEY}" }
            validation_context: ${VALIDATION}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": ${HCM}
          stat_prefix: ${NAME}
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "upstream reached\\n" } }
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service: { envoy_grpc: { cluster_name: sidecar }, timeout: 2s }
              failure_mode_allow: false
              status_on_error: { code: 503 }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

BOOTSTRAP = """\
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
${LISTENERS}
  clusters:
  - name: sidecar
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: sidecar
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${SIDECAR_PORT} } } }
"""


def render(pki: Pki, sidecar_port: int) -> str:
    listeners = "".join(
        string.Template(LISTENER).safe_substitute(NAME=name, VALIDATION=validation, HCM=HCM_TYPE)
        for name, validation in LISTENERS.items()
    )
    return string.Template(BOOTSTRAP.replace("${LISTENERS}", listeners)).substitute(
        CA=pki.ca, SERVER_CERT=pki.server.cert, SERVER_KEY=pki.server.key, SIDECAR_PORT=sidecar_port
    )


@dataclass
class TrustStack:
    envoy: Envoy
    ports: dict[str, int]
    sidecar: SidecarHandle
    pki: Pki

    async def get(self, listener: str, client: CertPair) -> int | None:
        """The status of a GET with `client`'s certificate; None if the handshake was refused."""
        return await asyncio.to_thread(self._get, self.ports[listener], client)

    def _get(self, port: int, client: CertPair) -> int | None:
        context = ssl.create_default_context(cafile=self.pki.ca)
        context.load_cert_chain(client.cert, client.key)
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
        try:
            conn.request("GET", "/orders")
            response = conn.getresponse()
            response.read()
            return response.status
        except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
            return None  # TLS 1.3 reports a refused client certificate on the first read
        finally:
            conn.close()


@pytest.fixture
async def stack(fault_opa: FaultOpa, pki: Pki, tmp_path: Path) -> AsyncIterator[TrustStack]:
    async with running_sidecar(fault_opa.url, require_tls_peer=True) as sidecar:
        with running_envoy(render(pki, sidecar.sidecar.grpc_port), tmp_path) as envoy:
            yield TrustStack(envoy, envoy.listener_ports(), sidecar, pki)


# listener -> (good, rogue CA, expired, other SPIFFE ID): the status, None = handshake
# refused, 403 = the guard found no principal
EXPECTED = {
    "trusted": (200, None, None, 200),
    "accept_untrusted": (200, 200, 200, 200),
    "allow_expired": (200, None, 200, 200),
    "pinned_san": (200, None, None, None),
    "no_trusted_ca": (403, 403, 403, 403),
}


@pytest.mark.parametrize("listener", sorted(EXPECTED))
async def test_which_client_certificates_become_a_principal(
    stack: TrustStack, fault_opa: FaultOpa, listener: str
) -> None:
    pki = stack.pki
    clients = (pki.client, pki.rogue_client, pki.expired_client, pki.other_client)
    identities = (CLIENT_SPIFFE_ID, CLIENT_SPIFFE_ID, CLIENT_SPIFFE_ID, OTHER_SPIFFE_ID)
    before = len(stack.sidecar.decisions())
    statuses = tuple([await stack.get(listener, client) for client in clients])
    assert statuses == EXPECTED[listener]
    # Every certificate Envoy took reached the policy as a principal that met the guard;
    # without one the guard denied before OPA was asked.
    checked = [(identity, status) for identity, status in zip(identities, statuses, strict=True) if status]
    decisions = stack.sidecar.decisions()[before:]
    assert [(d["outcome"], d.get("source_principal")) for d in decisions] == [
        ("allow", identity) if status == 200 else ("deny", None) for identity, status in checked
    ]
    assert all(d["reason"] == "missing_signal" for d in decisions if d["outcome"] == "deny")
    assert sum(r.method == "POST" for r in fault_opa.requests) == statuses.count(200)


async def test_accept_untrusted_hands_the_policy_a_forged_identity(
    stack: TrustStack, fault_opa: FaultOpa
) -> None:
    """The rogue CA's certificate claims the good client's SPIFFE ID; the trusted listener
    refuses it, ACCEPT_UNTRUSTED passes it on as that very principal."""
    assert await stack.get("trusted", stack.pki.rogue_client) is None
    before = len(stack.sidecar.decisions())
    assert await stack.get("accept_untrusted", stack.pki.rogue_client) == 200
    [decision] = stack.sidecar.decisions()[before:]
    assert (decision["outcome"], decision["source_principal"]) == ("allow", CLIENT_SPIFFE_ID)
    [post] = [r for r in fault_opa.requests if r.method == "POST"]
    assert post.json()["input"]["attributes"]["source"]["principal"] == CLIENT_SPIFFE_ID
