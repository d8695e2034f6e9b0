# Starting policy for HTTP APIs behind Envoy: deny unless a route in data allows.
#
# Data (at data.envoy; rego/envoy/data.json ships realm and jwt only, so that as
# shipped every request is denied until you configure routes and keys):
#   jwt     {"issuer", "audience", "algorithms"}: what a bearer token must satisfy
#   jwks    {"keys": [JWK]}: the issuer's public keys, each with "alg" (not shipped:
#           load your identity provider's key set, see rego/README.md)
#   realm   the realm of the WWW-Authenticate challenge
#   routes  [{"name", "methods", "path", "public"?, "scope"?}], first match in order wins
#           (not shipped; the demo's are in scripts/demo_data.json):
#           "public": true needs no credential; otherwise a verified token is needed,
#           holding "scope" when the route names one. "path" is a prefix by segments.
#
# Answers: allowed (with x-authz-policy and x-auth-subject for the upstream);
# 401 + WWW-Authenticate for a missing or invalid token where one is needed;
# 403 for everything else; each deny with a JSON body giving the reason.
package envoy.authz

import rego.v1

import data.lib.bearer
import data.lib.http

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\",\"reason\":\"denied\"}",
}

allow := {
	"allowed": true,
	"headers": grant.headers,
	"request_headers_to_remove": grant.remove,
} if grant

# Written as "not grant" over a rule that cannot error on request input; if it
# ever did, strict builtin errors make OPA answer 500 (a deny), and without
# them the error leaves grant undefined, which also lands here.
allow := denial if not grant

# -- who is calling --------------------------------------------------------------

claims := bearer.verified_claims(bearer.token(http.headers), data.envoy.jwt, data.envoy.jwks)

# -- what the routes in data say ------------------------------------------------------

# Indices of the routes whose method and path match the request.
matching_routes contains i if {
	some i, route in data.envoy.routes
	is_string(route.name)
	is_string(route.path)
	http.method in route.methods
	http.has_prefix(http.path_segments, http.segments_of(route.path))
}

route_permits(route) if route.public == true

route_permits(route) if {
	claims
	not "scope" in object.keys(route)
}

route_permits(route) if {
	is_string(route.scope)
	route.scope in bearer.scopes(claims)
}

permitting_routes contains i if {
	some i in matching_routes
	route_permits(data.envoy.routes[i])
}

token_route_matches if {
	some i in matching_routes
	not data.envoy.routes[i].public == true
}

# The first permitting route decides: a single value, so the rule cannot conflict.
grant := {
	"headers": {"x-authz-policy": route.name},
	"remove": ["x-internal-debug", "x-auth-subject"],
} if {
	route := data.envoy.routes[min(permitting_routes)]
	route.public == true
} else := {
	"headers": {"x-authz-policy": route.name, "x-auth-subject": claims.sub},
	"remove": ["x-internal-debug"],
} if {
	route := data.envoy.routes[min(permitting_routes)]
}

# -- why not ----------------------------------------------------------------------

default realm := "api"

realm := data.envoy.realm if is_string(data.envoy.realm)

denial := http.deny(403, "the request path is not canonical") if {
	not http.path_segments
} else := http.unauthorized(
	"the Authorization header holds no valid bearer token",
	sprintf(`Bearer realm="%s", error="invalid_token"`, [realm]),
) if {
	http.headers.authorization
	not claims
} else := http.unauthorized("this route needs a bearer token", sprintf(`Bearer realm="%s"`, [realm])) if {
	not claims
	token_route_matches
} else := object.union(
	http.deny(403, "the token lacks the scope this route needs"),
	{"headers": {
		"content-type": "application/json",
		"www-authenticate": sprintf(`Bearer realm="%s", error="insufficient_scope"`, [realm]),
	}},
) if {
	claims
	token_route_matches
} else := http.deny(403, "no route permits this request")
