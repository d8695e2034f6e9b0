# Starting policy for HTTP APIs behind Envoy: deny unless a rule allows.
package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 403, "body": "forbidden\n"}

# Anyone may read /public/...
allow := {
	"allowed": true,
	"headers": {"x-authz-policy": "public-read"},
	"request_headers_to_remove": ["x-internal-debug"],
} if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "public"
}

# A caller presenting the demo's static key may read anything.
allow := {"allowed": true, "headers": {"x-authz-policy": "demo-key"}} if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] != "public"
	input.attributes.request.http.headers["x-api-key"] == data.demo.api_key
}
