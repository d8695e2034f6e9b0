# The peer tests' decision: one rule, so the plugin and the sidecar ask the same path.
# `x-peer-policy` picks what answers: a shipped policy of rego/ (`envoy/authz`, the default,
# or `mcp`), `echo` (the whole input, so any difference in what the policy sees shows), or
# `shapes` (one result shape per path, /shapes/<name>).
package peer

import rego.v1

policy := object.get(input.attributes.request.http.headers, "x-peer-policy", "shipped")

decision := data.envoy.authz.allow if policy == "shipped"

decision := data.agents.mcp.allow if policy == "mcp"

decision := {"allowed": true, "headers": {"x-input": base64.encode(json.marshal(input))}} if policy == "echo"

decision := shapes[input.parsed_path[1]] if {
	policy == "shapes"
	input.parsed_path[0] == "shapes"
}

shapes["true"] := true

shapes["false"] := false

shapes["number"] := 3

shapes["all-mutations"] := {
	"allowed": true,
	"headers": {"x-single": "one", "x-many": ["a", "b"]},
	"request_headers_to_remove": ["x-drop"],
	"response_headers_to_add": {"x-resp": "r", "x-resp-many": ["r1", "r2"]},
	"query_parameters_to_set": {"q": "1", "qq": ["x", "y"]},
	"query_parameters_to_remove": ["drop"],
	"dynamic_metadata": {"user": "ann", "nested": {"n": 1, "list": [true, null]}},
}

shapes["header-objects"] := {"allowed": true, "headers": [{"x-a": "1"}, {"x-b": ["2", "3"]}]}

shapes["deny-full"] := {
	"allowed": false,
	"http_status": 401,
	"body": "{\"error\":\"who are you\"}",
	"headers": {"www-authenticate": "Bearer realm=\"peer\"", "content-type": "application/json"},
	"dynamic_metadata": {"why": "no token"},
}

shapes["deny-bare"] := {"allowed": false}

shapes["deny-status"] := {"allowed": false, "http_status": 429, "body": "slow down\n"}

shapes["missing-allowed"] := {"headers": {"x-a": "1"}}

shapes["allowed-string"] := {"allowed": "true"}

shapes["header-number"] := {"allowed": true, "headers": {"x-n": 1}}

shapes["header-upper"] := {"allowed": true, "headers": {"X-Upper": "1"}}

shapes["header-newline"] := {"allowed": true, "headers": {"x-nl": "a\r\nx-injected: 1"}}

shapes["status-unknown"] := {"allowed": false, "http_status": 299}

shapes["body-when-allowed"] := {"allowed": true, "body": 7}

shapes["remove-when-denied"] := {"allowed": false, "request_headers_to_remove": "x-a"}

shapes["conflict"] := conflicting

conflicting := 1 if input.parsed_path[1] == "conflict"

conflicting := 2 if input.parsed_path[1] == "conflict"

shapes["builtin-error"] := {"allowed": to_number("many") > 0}
