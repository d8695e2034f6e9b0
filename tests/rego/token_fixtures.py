"""Signed test tokens for the Rego tests, written as a Rego module.

`python -m tests.rego.token_fixtures` writes `rego/lib/fixtures_test.rego`: public keys and
tokens signed by fresh keys whose private halves are never stored, so nobody can mint more
tokens that verify against the committed keys. The Rego tests pin the clock with
`with time.now_ns as fixtures.now_ns`, so the tokens never expire for them.

Also used by the integration tests, which sign their own tokens at run time with `sign`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
FIXTURES_PATH: Final = REPO_ROOT / "rego" / "lib" / "fixtures_test.rego"

# The identities the shipped data files expect (rego/envoy/data.json, rego/agents/data.json).
ISSUER: Final = "https://idp.example.com"
API_AUDIENCE: Final = "https://api.example.com"
MCP_AUDIENCE: Final = "https://mcp.example.com/mcp"
SECRETS_AUDIENCE: Final = "https://secrets.example.com"

NOW: Final = 1767225600  # 2026-01-01T00:00:00Z, the Rego tests' clock


@dataclass(frozen=True)
class SigningKey:
    """A private key with the public JWK that verifies it."""

    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    kid: str
    alg: str

    @staticmethod
    def rsa(kid: str, alg: str = "RS256") -> SigningKey:
        return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid, alg)

    @staticmethod
    def ec(kid: str, alg: str = "ES256") -> SigningKey:
        return SigningKey(ec.generate_private_key(ec.SECP256R1()), kid, alg)

    def public_jwk(self, **overrides: str) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(public))
        else:
            jwk = json.loads(ECAlgorithm.to_jwk(public))
        jwk.pop("key_ops", None)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        jwk.update(overrides)
        return jwk

    def sign(self, claims: Mapping[str, Any], *, alg: str | None = None, kid: str | None = None) -> str:
        """A token signed with this key; `kid=""` leaves the key id out of the header."""
        headers = {"kid": self.kid if kid is None else kid} if kid != "" else {}
        return jwt.encode(dict(claims), self.private, algorithm=alg or self.alg, headers=headers or None)


def claims(subject: str, audience: str | list[str], *, now: int = NOW, **extra: Any) -> dict[str, Any]:
    """Typical access-token claims, valid from a minute before `now` for an hour."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject,
        "aud": audience,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
    }
    base.update(extra)
    return {key: value for key, value in base.items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"


def hmac_signed(payload: Mapping[str, Any], secret: bytes, kid: str) -> str:
    """HS256 keyed with a public key's bytes: the classic algorithm-confusion forgery."""
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, payload)
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(digest)}"


def unsigned(payload: Mapping[str, Any], kid: str) -> str:
    """An `alg: none` token."""
    return _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, payload) + "."


def with_payload(token: str, payload: Mapping[str, Any]) -> str:
    """`token` with its payload replaced and its signature kept: a tampered token."""
    header, _, signature = token.split(".")
    return f"{header}.{_b64(json.dumps(payload).encode())}.{signature}"


def build_fixtures() -> tuple[dict[str, Any], dict[str, str]]:
    """The public key sets and the named tokens of the Rego tests."""
    rsa_key = SigningKey.rsa("rsa-1")
    ec_key = SigningKey.ec("ec-1")
    stranger = SigningKey.rsa("rsa-1")  # same key id, a key nobody trusts
    rsa_public = rsa_key.public_jwk()
    hmac_secret = secrets.token_bytes(32)
    key_sets = {
        "jwks": {"keys": [rsa_public, ec_key.public_jwk()]},
        # The trusted RSA key declared for RS512, to test the algorithm allowlist.
        "rs512_jwks": {"keys": [rsa_key.public_jwk(alg="RS512", kid="rsa-1-rs512")]},
        # The trusted RSA key without "alg": such a key is never used.
        "no_alg_jwks": {"keys": [{k: v for k, v in rsa_public.items() if k != "alg"}]},
        # A shared secret as a JWK: a symmetric key must never verify anything.
        "hmac_jwks": {"keys": [{"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": _b64(hmac_secret)}]},
    }
    alice = claims("alice", API_AUDIENCE, scope="orders:read")
    tokens = {
        # envoy/authz and lib/bearer
        "alice": rsa_key.sign(alice),
        "alice_no_kid": rsa_key.sign(alice, kid=""),
        "bob_es256": ec_key.sign(claims("bob", API_AUDIENCE, scope="orders:read orders:write")),
        "carol_no_scope": rsa_key.sign(claims("carol", API_AUDIENCE)),
        "expired": rsa_key.sign({**alice, "exp": NOW - 1}),
        "not_yet_valid": rsa_key.sign({**alice, "nbf": NOW + 300}),
        "no_exp": rsa_key.sign({k: v for k, v in alice.items() if k != "exp"}),
        "no_sub": rsa_key.sign({k: v for k, v in alice.items() if k != "sub"}),
        "wrong_issuer": rsa_key.sign({**alice, "iss": "https://idp.evil.example"}),
        "wrong_audience": rsa_key.sign({**alice, "aud": "https://other.example.com"}),
        "no_audience": rsa_key.sign({k: v for k, v in alice.items() if k != "aud"}),
        "unknown_kid": rsa_key.sign(alice, kid="rsa-9"),
        "kid_of_ec_key": rsa_key.sign(alice, kid="ec-1"),
        "rs512": rsa_key.sign(alice, alg="RS512", kid="rsa-1-rs512"),
        "hs256_shared_secret": jwt.encode(alice, hmac_secret, algorithm="HS256", headers={"kid": "hs-1"}),
        "scope_not_string": rsa_key.sign({**alice, "scope": ["orders:read"]}),
        # agents/mcp
        "mcp_researcher": rsa_key.sign(
            claims("agent-researcher", MCP_AUDIENCE, scope="mcp:tools tools:search_docs")
        ),
        "mcp_no_scope": ec_key.sign(claims("agent-basic", MCP_AUDIENCE)),
        # agents/secrets
        "secrets_billing": rsa_key.sign(claims("svc-billing", SECRETS_AUDIENCE)),
        "secrets_billing_single_audience_list": rsa_key.sign(claims("svc-billing", [SECRETS_AUDIENCE])),
        "secrets_billing_broad_audience": rsa_key.sign(
            claims("svc-billing", [SECRETS_AUDIENCE, API_AUDIENCE])
        ),
        "secrets_billing_api_audience": rsa_key.sign(claims("svc-billing", API_AUDIENCE)),
        "secrets_unknown_subject": ec_key.sign(claims("svc-unknown", SECRETS_AUDIENCE)),
    }
    # Forgeries whose claims would pass, for each audience: only the signature is wrong.
    for prefix, forged_claims in (
        ("", alice),
        ("mcp_", claims("agent-researcher", MCP_AUDIENCE, scope="mcp:tools tools:search_docs")),
        ("secrets_", claims("svc-billing", SECRETS_AUDIENCE)),
    ):
        tokens[f"{prefix}untrusted_key"] = stranger.sign(forged_claims)
        tokens[f"{prefix}hs256_with_public_key"] = hmac_signed(
            forged_claims, json.dumps(rsa_public).encode(), "rsa-1"
        )
        tokens[f"{prefix}alg_none"] = unsigned(forged_claims, "rsa-1")
        signed = rsa_key.sign({**forged_claims, "scope": "", "sub": "nobody"})
        tokens[f"{prefix}tampered"] = with_payload(signed, forged_claims)
    return key_sets, tokens


def _rego_value(value: Any) -> str:
    return json.dumps(value, indent="\t", sort_keys=True)


def render(key_sets: Mapping[str, Any], tokens: Mapping[str, str]) -> str:
    lines = [
        "# Test keys and tokens. Generated by `python -m tests.rego.token_fixtures`; do not edit.",
        "# The private keys were discarded: these tokens are the only ones the keys verify.",
        "package lib.fixtures_test",
        "",
        "import rego.v1",
        "",
        f"now_ns := {NOW * 10**9} # 2026-01-01T00:00:00Z",
        "",
        f"issuer := {json.dumps(ISSUER)}",
        "",
    ]
    for name, value in key_sets.items():
        lines += [f"{name} := {_rego_value(value)}", ""]
    lines += [f"tokens := {_rego_value(dict(tokens))}", ""]
    return "\n".join(lines)


def main() -> None:
    FIXTURES_PATH.write_text(render(*build_fixtures()), encoding="utf-8")
    print(f"wrote {FIXTURES_PATH.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
