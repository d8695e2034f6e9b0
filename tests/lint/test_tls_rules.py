"""The TLS rules on the very listeners tests/operations/test_peer_principal_trust.py
runs on Envoy 1.40: the ones that let a forged or expired certificate through as
a principal are errors, the one that asks for no certificate a warning, and the
trustworthy ones are clean of TLS findings."""

from __future__ import annotations

import string
from pathlib import Path

import yaml

from tests.lint.helpers import lint
from tests.operations.test_peer_principal_trust import BOOTSTRAP, HCM_TYPE, LISTENER, LISTENERS

EXPECTED = {
    "trusted": set(),
    "accept_untrusted": {("tls-client-cert-unverified", "trust_chain_verification")},
    "allow_expired": {("tls-client-cert-unverified", "allow_expired_certificate")},
    "pinned_san": set(),
    "no_trusted_ca": {("tls-client-cert-not-requested", "require_client_certificate")},
}


def test_tls_findings_match_what_envoy_let_through(tmp_path: Path) -> None:
    listeners = "".join(
        string.Template(LISTENER).safe_substitute(NAME=name, VALIDATION=validation, HCM=HCM_TYPE)
        for name, validation in LISTENERS.items()
    )
    text = string.Template(BOOTSTRAP.replace("${LISTENERS}", listeners)).substitute(
        CA="/pki/ca.pem", SERVER_CERT="/pki/server.pem", SERVER_KEY="/pki/server.key", SIDECAR_PORT=9191
    )
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    names = [item["name"] for item in yaml.safe_load(text)["static_resources"]["listeners"]]
    found: dict[str, set[tuple[str, str]]] = {name: set() for name in names}
    for finding in lint(config).findings:
        if finding.rule.startswith("tls-"):
            found[names[int(finding.path.split("/")[3])]].add((finding.rule, finding.path.rsplit("/", 1)[-1]))
    assert found == EXPECTED
