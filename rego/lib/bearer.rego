# Bearer JWTs: take the token from the Authorization header and verify it
# against public keys held in data. Shared by the envoy and agents policies.
#
# Every check here is written so that a hostile token can only make the result
# undefined, never raise a builtin error: io.jwt.decode_verify errors on some
# malformed tokens (bad base64, a header that is not a JSON object, a non-string
# "alg"/"kid"/"typ"), and with strict builtin errors an error is a 500 rather
# than the 401 the caller deserves. The shape is therefore checked first.
package lib.bearer

import rego.v1

# Only asymmetric algorithms: a public key can never verify an HMAC ("HS*")
# signature or "none", whatever the configuration lists.
asymmetric_algorithms := {
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
}

max_token_bytes := 8192

# One base64url segment whose length can be decoded (a length of 4n+1 cannot).
_segment := `(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?`

# The credential of an "Authorization: Bearer <token>" header; undefined
# without one. The scheme is case-insensitive (RFC 9110); a header holding
# anything more (a second token, the comma list of repeated headers) has none.
token(headers) := t if {
	value := headers.authorization
	is_string(value)
	[[_, t]] := regex.find_all_string_submatch_n(`^(?i:bearer) ([^ ,]+)$`, value, 1)
}

# Three base64url segments that can be decoded, within a sane size.
well_formed(t) if {
	is_string(t)
	count(t) <= max_token_bytes
	regex.match(concat("", [`^`, _segment, `\.`, _segment, `\.`, _segment, `$`]), t)
}

# The decoded JOSE header, when it is a JSON object of strings only. This is
# stricter than RFC 7515 (no "crit", "jwk" or "x5c" members) and rules out
# every header that makes io.jwt.decode_verify error.
header(t) := h if {
	well_formed(t)
	raw := base64url.decode(split(t, ".")[0])
	json.is_valid(raw)
	h := json.unmarshal(raw)
	is_object(h)
	every value in h {
		is_string(value)
	}
	not "cty" in object.keys(h) # no nested tokens
}

# The claims of a token verified against `config` and the key set `jwks`:
#   config: {"issuer": string, "audience": string, "algorithms": [string]}
#   jwks:   {"keys": [JWK]}, each key with "kty", "alg" and (optionally) "kid"
# Undefined unless the signature, issuer, audience, expiry and not-before all
# check out at the engine's current time, and the token has a string "sub"
# and a numeric "exp" (io.jwt.decode_verify accepts a token without "exp").
verified_claims(t, config, jwks) := claims if {
	# An empty issuer or audience would switch that check off in decode_verify.
	is_string(config.issuer)
	config.issuer != ""
	is_string(config.audience)
	config.audience != ""
	is_array(config.algorithms)

	well_formed(t)
	h := header(t)
	alg := h.alg
	alg in asymmetric_algorithms
	alg in config.algorithms

	some key in jwks.keys
	usable_key(key, h)
	constraints := {
		"cert": json.marshal(key),
		"alg": alg,
		"iss": config.issuer,
		"aud": config.audience,
		"time": time.now_ns(),
	}
	[valid, _, claims] := io.jwt.decode_verify(t, constraints)
	valid == true
	is_number(claims.exp)
	is_string(claims.sub)
	claims.sub != ""
}

# A key is tried only for the algorithm it declares (no algorithm confusion),
# only for signatures, and only under its own key id when the token names one.
usable_key(key, h) if {
	is_object(key)
	key.alg == h.alg
	object.get(key, "use", "sig") == "sig"
	not "kid" in object.keys(h)
}

usable_key(key, h) if {
	is_object(key)
	key.alg == h.alg
	object.get(key, "use", "sig") == "sig"
	key.kid == h.kid
}

# The OAuth scopes of verified claims: RFC 9068's space-separated "scope".
scopes(claims) := {s | some s in split(claims.scope, " "); s != ""} if is_string(claims.scope)

scopes(claims) := set() if not "scope" in object.keys(claims)
