# Calls to a secrets store (a Vault-style HTTP API behind Envoy): allowed only
# for a bearer token meant for this store alone, on a path within the
# entitlement of the token's subject.
#
# No fallback: the bearer token is the only credential considered. A token for
# another audience, or for this store and others at once, is refused rather
# than tried some other way, and a request that also carries a credential the
# store itself might honour (X-Vault-Token, a cookie, ...) is refused, so the
# store can never act on a broader credential than the one checked here.
#
# Data (rego/agents/data.json, at data.agents):
#   token          {"issuer", "algorithms"}
#   jwks           {"keys": [JWK]}: the issuer's public keys (not shipped)
#   secrets_store  "audience": the exact "aud" a token must carry,
#                  "credential_headers": headers that carry other credentials,
#                  "entitlements": subject -> [{"path", "methods"}], "path" a
#                  prefix by segments ("/v1/secret/data/billing" covers
#                  ".../billing/db" but not ".../billing-old")
package agents.secrets

import rego.v1

import data.lib.bearer
import data.lib.http

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\",\"reason\":\"denied\"}",
}

allow := {"allowed": true, "dynamic_metadata": {"subject": claims.sub}} if permitted

allow := denial if not permitted

store := data.agents.secrets_store

token_config := {
	"issuer": data.agents.token.issuer,
	"audience": store.audience,
	"algorithms": data.agents.token.algorithms,
}

# decode_verify accepts a token whose "aud" merely includes the store; the
# exact check is audience_is_the_store.
claims := bearer.verified_claims(bearer.token(http.headers), token_config, data.agents.jwks)

audience_is_the_store if claims.aud == store.audience

audience_is_the_store if claims.aud == [store.audience]

# Headers of the request that carry some other credential.
other_credentials contains name if {
	some name, _ in http.headers
	name in store.credential_headers
}

entitled if {
	some entitlement in store.entitlements[claims.sub]
	is_string(entitlement.path)
	http.method in entitlement.methods
	http.has_prefix(http.path_segments, http.segments_of(entitlement.path))
}

permitted if {
	audience_is_the_store
	is_array(store.credential_headers)
	count(other_credentials) == 0
	entitled
}

challenge := `Bearer realm="secrets"`

denial := http.deny(403, "the request path is not canonical") if {
	not http.path_segments
} else := http.deny(403, "a second credential is not accepted") if {
	count(other_credentials) > 0
} else := http.unauthorized("the secrets store needs a bearer token", challenge) if {
	not http.headers.authorization
} else := http.unauthorized(
	"the Authorization header holds no valid bearer token for this store",
	concat(", ", [challenge, `error="invalid_token"`]),
) if {
	not claims
} else := http.deny(403, "the token is not for this store alone") if {
	not audience_is_the_store
} else := http.deny(403, "the subject is not entitled to this path")
