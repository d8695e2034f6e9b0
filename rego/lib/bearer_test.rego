package lib.bearer_test

import rego.v1

import data.lib.bearer
import data.lib.fixtures_test as fixtures

config := {
	"issuer": fixtures.issuer,
	"audience": "https://api.example.com",
	"algorithms": ["RS256", "ES256"],
}

verify(name) := bearer.verified_claims(fixtures.tokens[name], config, fixtures.jwks)

# -- token: the credential of the Authorization header -------------------------

test_token_is_taken_from_a_bearer_header if {
	bearer.token({"authorization": "Bearer abc.def.ghi"}) == "abc.def.ghi"
}

test_bearer_scheme_is_case_insensitive if {
	bearer.token({"authorization": "bEaReR abc.def.ghi"}) == "abc.def.ghi"
}

test_no_authorization_header_has_no_token if {
	not bearer.token({"x-api-key": "abc.def.ghi"})
}

test_other_schemes_have_no_token if {
	not bearer.token({"authorization": "Basic YWxpY2U6c2VjcmV0"})
	not bearer.token({"authorization": "Bearerabc.def.ghi"})
}

test_two_credentials_in_one_header_have_no_token if {
	not bearer.token({"authorization": "Bearer a.b.c, Bearer d.e.f"})
	not bearer.token({"authorization": "Bearer a.b.c d.e.f"})
	not bearer.token({"authorization": "Bearer  a.b.c"})
}

test_a_non_string_header_has_no_token if {
	not bearer.token({"authorization": ["Bearer a.b.c"]})
}

# -- well_formed and header: hostile shapes are undefined, never errors ---------

test_a_signed_token_is_well_formed if {
	bearer.well_formed(fixtures.tokens.alice)
}

test_malformed_tokens_are_not_well_formed if {
	every t in ["", "a.b", "a.b.c.d", "Y.e30.AAAA", "eyJhbGciOiJSUzI1NiJ9.Y.AAAA", "e30.e30.Y", "e30.e3=.AAAA", 5] {
		not bearer.well_formed(t)
	}
}

test_an_oversized_token_is_not_well_formed if {
	huge := concat(".", [concat("", ["AAAA" | some _ in numbers.range(1, 2100)]), "e30", "AAAA"])
	not bearer.well_formed(huge)
}

test_header_of_a_signed_token if {
	bearer.header(fixtures.tokens.alice) == {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}
}

# Each of these makes io.jwt.decode_verify raise an error; here they are just undefined.
test_hostile_headers_are_undefined if {
	payload := split(fixtures.tokens.alice, ".")[1]
	every raw in [`nope`, `[1]`, `{"alg":5}`, `{"alg":"RS256","kid":5}`, `{"alg":"RS256","typ":5}`, `{"alg":"RS256","crit":["exp"]}`, `{"alg":"RS256","cty":"JWT"}`] {
		t := concat(".", [base64url.encode_no_pad(raw), payload, "AAAA"])
		not bearer.header(t)
		not bearer.verified_claims(t, config, fixtures.jwks) with time.now_ns as fixtures.now_ns
	}
}

# -- verified_claims: signature, issuer, audience, time, algorithms -------------

test_rs256_token_verifies if {
	claims := verify("alice") with time.now_ns as fixtures.now_ns
	claims.sub == "alice"
	claims.scope == "orders:read"
}

test_es256_token_verifies if {
	claims := verify("bob_es256") with time.now_ns as fixtures.now_ns
	claims.sub == "bob"
}

test_token_without_key_id_is_tried_against_keys_of_its_algorithm if {
	claims := verify("alice_no_kid") with time.now_ns as fixtures.now_ns
	claims.sub == "alice"
}

test_expired_token_is_refused if {
	not verify("expired") with time.now_ns as fixtures.now_ns
}

test_token_is_valid_until_its_expiry_and_not_after if {
	exp_ns := 3600 * 1000000000
	verify("alice") with time.now_ns as fixtures.now_ns + exp_ns - 1000000000
	not verify("alice") with time.now_ns as fixtures.now_ns + exp_ns + 1000000000
}

test_token_before_not_before_is_refused if {
	not verify("not_yet_valid") with time.now_ns as fixtures.now_ns
	verify("not_yet_valid") with time.now_ns as fixtures.now_ns + 301000000000
}

test_token_without_expiry_is_refused if {
	not verify("no_exp") with time.now_ns as fixtures.now_ns
}

test_token_without_subject_is_refused if {
	not verify("no_sub") with time.now_ns as fixtures.now_ns
}

test_wrong_issuer_is_refused if {
	not verify("wrong_issuer") with time.now_ns as fixtures.now_ns
}

test_wrong_or_missing_audience_is_refused if {
	not verify("wrong_audience") with time.now_ns as fixtures.now_ns
	not verify("no_audience") with time.now_ns as fixtures.now_ns
}

test_token_signed_by_an_untrusted_key_is_refused if {
	not verify("untrusted_key") with time.now_ns as fixtures.now_ns
}

test_token_naming_an_unknown_key_is_refused if {
	not verify("unknown_kid") with time.now_ns as fixtures.now_ns
}

test_key_is_used_only_for_its_own_algorithm if {
	# RS256 signature, header naming the ES256 key: no key of that id fits.
	not verify("kid_of_ec_key") with time.now_ns as fixtures.now_ns
}

test_hmac_signed_with_the_public_key_is_refused if {
	not verify("hs256_with_public_key") with time.now_ns as fixtures.now_ns
}

test_hmac_is_refused_even_when_configured if {
	hs_config := object.union(config, {"algorithms": ["HS256", "RS256"]})
	t := fixtures.tokens.hs256_with_public_key
	not bearer.verified_claims(t, hs_config, fixtures.jwks) with time.now_ns as fixtures.now_ns
}

test_shared_secret_keys_are_refused_even_when_configured if {
	hs_config := object.union(config, {"algorithms": ["HS256"]})
	t := fixtures.tokens.hs256_shared_secret
	not bearer.verified_claims(t, hs_config, fixtures.hmac_jwks) with time.now_ns as fixtures.now_ns
}

test_alg_none_is_refused if {
	none_config := object.union(config, {"algorithms": ["none", "RS256"]})
	t := fixtures.tokens.alg_none
	not bearer.verified_claims(t, none_config, fixtures.jwks) with time.now_ns as fixtures.now_ns
}

test_algorithm_outside_the_allowlist_is_refused if {
	t := fixtures.tokens.rs512
	not bearer.verified_claims(t, config, fixtures.rs512_jwks) with time.now_ns as fixtures.now_ns

	# The same token verifies once RS512 is allowed: the allowlist is what refused it.
	rs512_config := object.union(config, {"algorithms": ["RS512"]})
	bearer.verified_claims(t, rs512_config, fixtures.rs512_jwks) with time.now_ns as fixtures.now_ns
}

test_key_without_declared_algorithm_is_never_used if {
	every name in ["alice", "alice_no_kid"] {
		t := fixtures.tokens[name]
		not bearer.verified_claims(t, config, fixtures.no_alg_jwks) with time.now_ns as fixtures.now_ns
	}
}

test_key_declared_for_another_algorithm_is_not_used if {
	# The trusted RSA key, declared for RS512 only, must not verify an RS256 signature.
	t := fixtures.tokens.alice_no_kid
	both := object.union(config, {"algorithms": ["RS256", "RS512"]})
	not bearer.verified_claims(t, both, fixtures.rs512_jwks) with time.now_ns as fixtures.now_ns
}

test_key_for_encryption_is_never_used if {
	enc_jwks := {"keys": [object.union(key, {"use": "enc"}) | some key in fixtures.jwks.keys]}
	t := fixtures.tokens.alice
	not bearer.verified_claims(t, config, enc_jwks) with time.now_ns as fixtures.now_ns
}

test_tampered_payload_is_refused if {
	not verify("tampered") with time.now_ns as fixtures.now_ns
}

test_empty_issuer_or_audience_in_config_verifies_nothing if {
	t := fixtures.tokens.alice
	not bearer.verified_claims(t, object.union(config, {"issuer": ""}), fixtures.jwks) with time.now_ns as fixtures.now_ns
	not bearer.verified_claims(t, object.union(config, {"audience": ""}), fixtures.jwks) with time.now_ns as fixtures.now_ns
	not bearer.verified_claims(t, object.remove(config, ["issuer"]), fixtures.jwks) with time.now_ns as fixtures.now_ns

	# An empty audience would make decode_verify accept a token that has none.
	u := fixtures.tokens.no_audience
	not bearer.verified_claims(u, object.union(config, {"audience": ""}), fixtures.jwks) with time.now_ns as fixtures.now_ns
	w := fixtures.tokens.wrong_issuer
	not bearer.verified_claims(w, object.union(config, {"issuer": ""}), fixtures.jwks) with time.now_ns as fixtures.now_ns
}

test_algorithms_that_are_not_a_list_verify_nothing if {
	t := fixtures.tokens.alice
	not bearer.verified_claims(t, object.union(config, {"algorithms": "RS256"}), fixtures.jwks) with time.now_ns as fixtures.now_ns
}

test_no_keys_verify_nothing if {
	t := fixtures.tokens.alice
	not bearer.verified_claims(t, config, {"keys": []}) with time.now_ns as fixtures.now_ns
	not bearer.verified_claims(t, config, {}) with time.now_ns as fixtures.now_ns
}

# -- scopes ---------------------------------------------------------------------

test_scopes_are_split_on_spaces if {
	bearer.scopes({"scope": "a  b:c d"}) == {"a", "b:c", "d"}
}

test_no_scope_claim_is_no_scopes if {
	bearer.scopes({"sub": "x"}) == set()
}

test_a_scope_claim_that_is_not_a_string_is_undefined if {
	not bearer.scopes({"scope": ["a"]})
}
