package envoy.authz_test

import rego.v1

import data.envoy.authz
import data.lib.fixtures_test as fixtures

request(method, parsed_path, headers) := {
	"attributes": {"request": {"http": {
		"method": method,
		"path": concat("/", array.concat([""], parsed_path)),
		"headers": headers,
	}}},
	"parsed_path": parsed_path,
	"parsed_query": {},
}

# The routes these tests configure (the demo's); rego/envoy/data.json ships none.
example_routes := [
	{"name": "public-read", "methods": ["GET"], "path": "/public", "public": true},
	{"name": "orders-read", "methods": ["GET"], "path": "/api/orders", "scope": "orders:read"},
	{"name": "orders-write", "methods": ["POST", "PUT"], "path": "/api/orders", "scope": "orders:write"},
	{"name": "profile", "methods": ["GET"], "path": "/api/me"},
]

# The decision for a request, with the example routes and the test keys loaded and the clock pinned.
decide(method, parsed_path, headers) := decide_with(example_routes, method, parsed_path, headers)

# The same with other routes.
decide_with(route_table, method, parsed_path, headers) := decision if {
	decision := authz.allow with input as request(method, parsed_path, headers)
		with data.envoy.routes as route_table
		with data.envoy.jwks as fixtures.jwks
		with time.now_ns as fixtures.now_ns
}

bearer(name) := {"authorization": concat(" ", ["Bearer", fixtures.tokens[name]])}

body(decision) := json.unmarshal(decision.body)

denied(decision, status, reason) if {
	decision.allowed == false
	decision.http_status == status
	decision.headers["content-type"] == "application/json"
	body(decision).reason == reason
}

# -- as shipped: no routes, no keys, nothing allowed ---------------------------------------

test_as_shipped_every_request_is_denied if {
	every path in [["public", "hello"], ["api", "orders"], ["api", "me"], [""]] {
		d := authz.allow with input as request("GET", path, bearer("alice"))
			with time.now_ns as fixtures.now_ns
		d.allowed == false
	}
	anonymous := authz.allow with input as request("GET", ["public", "hello"], {})
	denied(anonymous, 403, "no route permits this request")
}

test_keys_without_routes_allow_nothing if {
	d := authz.allow with input as request("GET", ["api", "orders"], bearer("alice"))
		with data.envoy.jwks as fixtures.jwks
		with time.now_ns as fixtures.now_ns
	denied(d, 403, "no route permits this request")
}

test_routes_without_keys_verify_no_token if {
	d := authz.allow with input as request("GET", ["api", "orders"], bearer("alice"))
		with data.envoy.routes as example_routes
		with time.now_ns as fixtures.now_ns
	denied(d, 401, "the Authorization header holds no valid bearer token")
}

# -- routes ----------------------------------------------------------------------------

test_public_get_is_allowed if {
	d := decide("GET", ["public", "hello"], {})
	d.allowed == true
	d.headers == {"x-authz-policy": "public-read"}
	"x-internal-debug" in d.request_headers_to_remove
	"x-auth-subject" in d.request_headers_to_remove # a client cannot pose as a subject
}

test_public_root_and_trailing_slash_are_allowed if {
	decide("GET", ["public"], {}).allowed == true
	decide("GET", ["public", ""], {}).allowed == true
}

test_public_needs_no_credential_even_a_broken_one if {
	decide("GET", ["public", "x"], {"authorization": "Bearer garbage"}).allowed == true
}

test_everything_else_is_403_with_a_json_body if {
	d := decide("GET", ["private"], {})
	denied(d, 403, "no route permits this request")
	body(d).error == "forbidden"
}

test_an_api_key_header_is_no_credential if {
	denied(decide("GET", ["private"], {"x-api-key": "anything"}), 403, "no route permits this request")
}

test_public_route_is_get_only if {
	denied(decide("POST", ["public", "x"], {}), 403, "no route permits this request")
}

test_route_prefix_matches_whole_segments if {
	denied(decide("GET", ["publicity"], {}), 403, "no route permits this request")
}

test_root_path_is_canonical if {
	root_route := [{"name": "root", "methods": ["GET"], "path": "/", "public": true}]
	decide_with(root_route, "GET", [""], {}).allowed == true
	denied(decide("GET", [""], {}), 403, "no route permits this request")
}

test_dot_segments_and_empty_segments_are_denied if {
	every path in [["public", "..", "admin"], ["public", ".", "x"], ["public", "", "x"]] {
		denied(decide("GET", path, bearer("carol_no_scope")), 403, "the request path is not canonical")
	}
}

test_missing_parsed_path_is_denied if {
	d := authz.allow with input as {"attributes": {"request": {"http": {"method": "GET", "headers": {}}}}}
	denied(d, 403, "the request path is not canonical")
}

# -- bearer tokens --------------------------------------------------------------------

test_token_with_the_route_scope_is_allowed if {
	d := decide("GET", ["api", "orders", "7"], bearer("alice"))
	d.allowed == true
	d.headers == {"x-authz-policy": "orders-read", "x-auth-subject": "alice"}
}

test_es256_token_with_the_write_scope_is_allowed if {
	d := decide("POST", ["api", "orders"], bearer("bob_es256"))
	d.allowed == true
	d.headers["x-auth-subject"] == "bob"
	d.headers["x-authz-policy"] == "orders-write"
}

test_route_without_scope_needs_only_a_verified_token if {
	decide("GET", ["api", "me"], bearer("carol_no_scope")).allowed == true
	denied(decide("GET", ["api", "me"], {}), 401, "this route needs a bearer token")
}

test_missing_token_is_401_with_a_challenge if {
	d := decide("GET", ["api", "orders"], {})
	denied(d, 401, "this route needs a bearer token")
	d.headers["www-authenticate"] == `Bearer realm="api"`
	body(d).error == "unauthorized"
}

test_invalid_tokens_are_401_invalid_token if {
	every name in [
		"expired", "not_yet_valid", "no_exp", "no_sub", "wrong_issuer", "wrong_audience",
		"no_audience", "untrusted_key", "unknown_kid", "kid_of_ec_key", "hs256_with_public_key",
		"alg_none", "rs512", "tampered",
	] {
		d := decide("GET", ["api", "orders"], bearer(name))
		denied(d, 401, "the Authorization header holds no valid bearer token")
		d.headers["www-authenticate"] == `Bearer realm="api", error="invalid_token"`
	}
}

test_malformed_credentials_are_401 if {
	every value in ["Bearer garbage", "Bearer a.b.c", "Basic YWxpY2U6c2VjcmV0", "Bearer", ""] {
		denied(decide("GET", ["api", "orders"], {"authorization": value}), 401, "the Authorization header holds no valid bearer token")
	}
}

test_valid_token_without_the_scope_is_403 if {
	d := decide("POST", ["api", "orders"], bearer("alice"))
	denied(d, 403, "the token lacks the scope this route needs")
	d.headers["www-authenticate"] == `Bearer realm="api", error="insufficient_scope"`
	denied(decide("GET", ["api", "orders"], bearer("carol_no_scope")), 403, "the token lacks the scope this route needs")
}

test_scope_claim_that_is_not_a_string_grants_no_scope if {
	denied(decide("GET", ["api", "orders"], bearer("scope_not_string")), 403, "the token lacks the scope this route needs")
}

test_valid_token_on_an_unknown_route_is_403 if {
	denied(decide("GET", ["admin"], bearer("alice")), 403, "no route permits this request")
	denied(decide("DELETE", ["api", "orders"], bearer("bob_es256")), 403, "no route permits this request")
}

test_no_keys_in_data_means_no_token_verifies if {
	d := authz.allow with input as request("GET", ["api", "orders"], bearer("alice"))
		with time.now_ns as fixtures.now_ns
	denied(d, 401, "the Authorization header holds no valid bearer token")
}

test_token_is_checked_against_the_engine_clock if {
	later := fixtures.now_ns + (2 * 3600) * 1000000000
	d := authz.allow with input as request("GET", ["api", "orders"], bearer("alice"))
		with data.envoy.jwks as fixtures.jwks
		with time.now_ns as later
	denied(d, 401, "the Authorization header holds no valid bearer token")
}

# -- routes from data ---------------------------------------------------------------------

test_first_permitting_route_decides if {
	routes := [
		{"name": "narrow", "methods": ["GET"], "path": "/api/orders/7", "scope": "orders:read"},
		{"name": "wide", "methods": ["GET"], "path": "/api", "scope": "orders:read"},
	]
	d := decide_with(routes, "GET", ["api", "orders", "7"], bearer("alice"))
	d.headers["x-authz-policy"] == "narrow"
	e := decide_with(routes, "GET", ["api", "other"], bearer("alice"))
	e.headers["x-authz-policy"] == "wide"
}

test_misconfigured_routes_match_nothing if {
	routes := [
		{"name": "no-methods", "methods": "GET", "path": "/api", "public": true},
		{"name": "path-not-string", "methods": ["GET"], "path": ["api"], "public": true},
		{"methods": ["GET"], "path": "/api", "public": true},
		{"name": "scope-not-string", "methods": ["GET"], "path": "/api", "scope": ["orders:read"]},
	]
	d := decide_with(routes, "GET", ["api", "orders"], bearer("alice"))
	d.allowed == false
}

test_public_must_be_exactly_true if {
	routes := [{"name": "maybe", "methods": ["GET"], "path": "/x", "public": "true"}]
	d := decide_with(routes, "GET", ["x"], {})
	denied(d, 401, "this route needs a bearer token")
}

test_no_routes_deny_everything_but_the_demo_key if {
	public := decide_with([], "GET", ["public"], {})
	denied(public, 403, "no route permits this request")
	orders := decide_with([], "GET", ["api", "orders"], bearer("alice"))
	denied(orders, 403, "no route permits this request")
}

test_realm_comes_from_data if {
	d := decide("GET", ["api", "orders"], {}) with data.envoy.realm as "shop"
	d.headers["www-authenticate"] == `Bearer realm="shop"`
}
