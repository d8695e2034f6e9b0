package agents.secrets_test

import rego.v1

import data.agents.secrets
import data.lib.fixtures_test as fixtures

secret_input(method, path, headers) := {
	"attributes": {"request": {"http": {"method": method, "path": concat("/", array.concat([""], path)), "headers": headers}}},
	"parsed_path": path,
	"parsed_query": {},
}

decide_at(doc, now_ns) := decision if {
	decision := secrets.allow with input as doc
		with data.agents.jwks as fixtures.jwks
		with time.now_ns as now_ns
}

decide(doc) := decide_at(doc, fixtures.now_ns)

bearer(name) := {"authorization": concat(" ", ["Bearer", fixtures.tokens[name]])}

billing_db := ["v1", "secret", "data", "billing", "db"]

read(name, path) := decide(secret_input("GET", path, bearer(name)))

denied(decision, status, reason) if {
	decision.allowed == false
	decision.http_status == status
	json.unmarshal(decision.body).reason == reason
}

# The store's data with one member replaced (see mcp_test.rego for why not `with` on it).
store_with(path, value) := json.patch(data.agents.secrets_store, [{"op": "add", "path": path, "value": value}])

# -- allowed ---------------------------------------------------------------------------

test_entitled_read_with_a_store_token_is_allowed if {
	d := read("secrets_billing", billing_db)
	d.allowed == true
	d.dynamic_metadata == {"subject": "svc-billing"}
}

test_audience_list_naming_only_the_store_is_allowed if {
	read("secrets_billing_single_audience_list", billing_db).allowed == true
}

test_each_entitlement_has_its_own_methods if {
	metadata := ["v1", "secret", "metadata", "billing"]
	decide(secret_input("LIST", metadata, bearer("secrets_billing"))).allowed == true
	denied(decide(secret_input("LIST", billing_db, bearer("secrets_billing"))), 403, "the subject is not entitled to this path")
}

# -- the audience must be exactly the store ------------------------------------------------

test_token_for_the_store_and_others_is_denied if {
	denied(read("secrets_billing_broad_audience", billing_db), 403, "the token is not for this store alone")
}

test_token_for_another_audience_is_401 if {
	d := read("secrets_billing_api_audience", billing_db)
	denied(d, 401, "the Authorization header holds no valid bearer token for this store")
	d.headers["www-authenticate"] == `Bearer realm="secrets", error="invalid_token"`
}

test_token_without_audience_is_401 if {
	denied(read("no_audience", billing_db), 401, "the Authorization header holds no valid bearer token for this store")
}

test_store_without_a_configured_audience_verifies_nothing if {
	every audience in ["", ["https://secrets.example.com"], null] {
		store := store_with("/audience", audience)
		d := read("secrets_billing", billing_db) with data.agents.secrets_store as store
		d.allowed == false
	}
}

# -- no fallback to a broader credential ------------------------------------------------------

test_missing_token_is_401_even_with_an_entitled_peer_identity if {
	doc := object.union(secret_input("GET", billing_db, {}), {"source_principal": "svc-billing"})
	d := decide(doc)
	denied(d, 401, "the secrets store needs a bearer token")
	d.headers["www-authenticate"] == `Bearer realm="secrets"`
}

test_second_credential_is_denied_even_with_a_valid_token if {
	every header in ["x-vault-token", "cookie", "x-api-key", "proxy-authorization"] {
		headers := object.union(bearer("secrets_billing"), {header: "s.root-token"})
		denied(decide(secret_input("GET", billing_db, headers)), 403, "a second credential is not accepted")
	}
}

test_second_credential_does_not_replace_an_invalid_token if {
	headers := object.union(bearer("secrets_billing_api_audience"), {"x-vault-token": "s.root-token"})
	decide(secret_input("GET", billing_db, headers)).allowed == false
}

test_two_bearer_tokens_in_one_header_are_401 if {
	value := concat("", ["Bearer ", fixtures.tokens.secrets_billing_broad_audience, ", Bearer ", fixtures.tokens.secrets_billing])
	d := decide(secret_input("GET", billing_db, {"authorization": value}))
	denied(d, 401, "the Authorization header holds no valid bearer token for this store")
}

test_credential_headers_must_be_configured if {
	store := object.remove(data.agents.secrets_store, ["credential_headers"])
	d := read("secrets_billing", billing_db) with data.agents.secrets_store as store
	d.allowed == false
}

# -- the path must be within the subject's entitlement -------------------------------------------

test_path_outside_the_entitlement_is_denied if {
	every path in [
		["v1", "secret", "data", "payroll", "db"],
		["v1", "secret", "data", "billing-old", "db"],
		["v1", "secret", "data"],
		["v1", "sys", "seal"],
	] {
		denied(read("secrets_billing", path), 403, "the subject is not entitled to this path")
	}
}

test_entitlement_root_itself_is_within_it if {
	read("secrets_billing", ["v1", "secret", "data", "billing"]).allowed == true
}

test_method_outside_the_entitlement_is_denied if {
	d := decide(secret_input("PUT", billing_db, bearer("secrets_billing")))
	denied(d, 403, "the subject is not entitled to this path")
}

test_subject_without_entitlements_is_denied if {
	denied(read("secrets_unknown_subject", billing_db), 403, "the subject is not entitled to this path")
}

test_path_traversal_is_denied if {
	path := ["v1", "secret", "data", "billing", "..", "..", "..", "sys", "seal"]
	denied(read("secrets_billing", path), 403, "the request path is not canonical")
}

test_malformed_entitlements_grant_nothing if {
	every entitlement in [
		{"path": ["v1", "secret", "data", "billing"], "methods": ["GET"]},
		{"path": "/v1/secret/data/billing", "methods": "GET"},
		{"path": "/v1/secret/data/billing"},
		"/v1/secret/data/billing",
	] {
		store := store_with("/entitlements/svc-billing", [entitlement])
		d := read("secrets_billing", billing_db) with data.agents.secrets_store as store
		denied(d, 403, "the subject is not entitled to this path")
	}
}

# -- token validity --------------------------------------------------------------------

test_expired_token_is_401 if {
	doc := secret_input("GET", billing_db, bearer("secrets_billing"))
	decide_at(doc, fixtures.now_ns + 3599000000000).allowed == true
	denied(decide_at(doc, fixtures.now_ns + 3601000000000), 401, "the Authorization header holds no valid bearer token for this store")
}

test_forged_tokens_are_401 if {
	every name in ["secrets_hs256_with_public_key", "secrets_alg_none", "secrets_untrusted_key", "secrets_tampered"] {
		denied(read(name, billing_db), 401, "the Authorization header holds no valid bearer token for this store")
	}
}
