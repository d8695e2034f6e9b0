# The parts of an Envoy CheckRequest input the policies decide on, and the
# deny results they answer with.
package lib.http

import rego.v1

method := input.attributes.request.http.method

headers := input.attributes.request.http.headers

# The request path as segments, when it is canonical: no "." or ".." segment
# and no empty segment but an optional trailing one ("/a/" is ["a"], "/" is []).
# A path that the upstream might resolve differently from its plain reading is
# never matched against a rule; it stays undefined.
path_segments := segments if {
	raw := input.parsed_path
	is_array(raw)
	segments := _without_trailing_empty(raw)
	every segment in segments {
		is_string(segment)
		not segment in {"", ".", ".."}
	}
}

_without_trailing_empty(raw) := array.slice(raw, 0, count(raw) - 1) if {
	count(raw) > 0
	raw[count(raw) - 1] == ""
}

_without_trailing_empty(raw) := raw if {
	count(raw) > 0
	raw[count(raw) - 1] != ""
}

_without_trailing_empty(raw) := raw if count(raw) == 0

# The canonical path as a string: "/a/b", or "/" for the root.
path := concat("", ["/", concat("/", path_segments)])

# "/a/b/" as ["a", "b"]: how paths are written in data.
segments_of(text) := [] if trim(text, "/") == ""

segments_of(text) := split(trim(text, "/"), "/") if trim(text, "/") != ""

# Whether the segments start with the segments of prefix: "/api" covers
# "/api" and "/api/x", but not "/apix".
has_prefix(segments, prefix) if {
	count(segments) >= count(prefix)
	array.slice(segments, 0, count(prefix)) == prefix
}

json_headers := {"content-type": "application/json"}

error_names := {400: "bad_request", 401: "unauthorized", 403: "forbidden", 413: "payload_too_large"}

# A deny with a JSON body that says why.
deny(status, reason) := {
	"allowed": false,
	"http_status": status,
	"headers": json_headers,
	"body": json.marshal({"error": error_names[status], "reason": reason}),
}

# A 401 with the challenge a client needs to try again (RFC 6750 section 3).
unauthorized(reason, challenge) := object.union(
	deny(401, reason),
	{"headers": object.union(json_headers, {"www-authenticate": challenge})},
)
