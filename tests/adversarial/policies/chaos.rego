# The chaos runs' policy. Every check's path is /allow/<n> or /deny/<n>, n unique per
# check. A yes names the check it answers, in a header the upstream echoes back, so the
# load generator can tell whose yes let each request through.
package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 403, "body": "denied by the chaos policy\n"}

allow := {"allowed": true, "headers": {"x-chaos-check": input.parsed_path[1]}} if {
	input.parsed_path[0] == "allow"
	count(input.parsed_path) == 2
}
