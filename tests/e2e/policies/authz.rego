# The end-to-end tests' policy: one path per behaviour the tests look for at the client
# and at the upstream.
package envoy.authz

import rego.v1

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"x-e2e-deny": "default"},
	"body": "forbidden by the e2e policy\n",
}

http := input.attributes.request.http

# GET /allowed/...: the caller is alice. The policy sets identity headers (over any the
# client sent), strips a debug header and adds one to the client's response.
allow := {
	"allowed": true,
	"headers": {"x-user-id": "alice", "x-authz-policy": "e2e"},
	"request_headers_to_remove": ["x-internal-debug"],
	"response_headers_to_add": {"x-authz-decision": "allowed"},
} if {
	http.method == "GET"
	input.parsed_path[0] == "allowed"
}

# /limited/...: a deny with the policy's own status, headers and body.
allow := {
	"allowed": false,
	"http_status": 429,
	"headers": {"retry-after": "7", "x-e2e-deny": "limited"},
	"body": "slow down\n",
} if {
	input.parsed_path[0] == "limited"
}

# POST /orders: decided on the JSON body.
allow := {"allowed": true, "headers": {"x-order-item": input.parsed_body.item}} if {
	http.method == "POST"
	input.parsed_path == ["orders"]
	input.parsed_body.quantity <= 10
}

allow := {"allowed": false, "http_status": 422, "body": "at most 10 per order\n"} if {
	http.method == "POST"
	input.parsed_path == ["orders"]
	input.parsed_body.quantity > 10
}

# POST /upload: only bodies the policy saw whole.
allow := {"allowed": false, "http_status": 413, "body": "body too large to authorize\n"} if {
	http.method == "POST"
	input.parsed_path == ["upload"]
	input.truncated_body
}

allow := {"allowed": true, "headers": {"x-body-seen": "whole"}} if {
	http.method == "POST"
	input.parsed_path == ["upload"]
	input.truncated_body == false
}

# POST /upload-any: any body; the policy sees its first max_request_bytes only.
allow := {"allowed": true, "headers": {"x-body-truncated": sprintf("%v", [input.truncated_body])}} if {
	http.method == "POST"
	input.parsed_path == ["upload-any"]
}
