# MCP (Model Context Protocol) over streamable HTTP behind Envoy: which
# JSON-RPC calls an agent may make, decided on the parsed request body.
#
# Envoy must send the body (with_request_body); the sidecar parses it into
# input.parsed_body and says in input.truncated_body whether it was cut short.
#
# Data (rego/agents/data.json, at data.agents):
#   token       {"issuer", "algorithms"}: what an agent's bearer token must satisfy
#   jwks        {"keys": [JWK]}: the issuer's public keys (not shipped)
#   mcp_server  "audience" (the token's "aud", the server's canonical URI), "path",
#               "resource_metadata" (for the 401 challenge), "session_methods" (HTTP
#               methods allowed without a body, e.g. GET for the SSE stream),
#               "max_batch", and the rules:
#               "methods"       JSON-RPC request method -> {} or {"scope": s}
#               "notifications" notification method -> {} or {"scope": s}
#               "tools"         tool name -> {"scope": s}; tools/call needs s
#
# A POST is allowed only when every message of the body is: an unknown tool, a
# missing scope, an unknown method, a malformed or truncated body, or a batch
# holding any one forbidden message is denied.
package agents.mcp

import rego.v1

import data.lib.bearer
import data.lib.http

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\",\"reason\":\"denied\"}",
}

allow := {"allowed": true, "headers": {"x-auth-subject": claims.sub}} if permitted

allow := denial if not permitted

server := data.agents.mcp_server

token_config := {
	"issuer": data.agents.token.issuer,
	"audience": server.audience,
	"algorithms": data.agents.token.algorithms,
}

claims := bearer.verified_claims(bearer.token(http.headers), token_config, data.agents.jwks)

at_endpoint if {
	is_string(server.path)
	http.path_segments == http.segments_of(server.path)
}

# -- the body -------------------------------------------------------------------------

single_message if is_object(input.parsed_body)

# The JSON-RPC messages of a complete body: one message, or a non-empty batch.
messages := [input.parsed_body] if {
	input.truncated_body == false
	single_message
}

messages := input.parsed_body if {
	input.truncated_body == false
	is_array(input.parsed_body)
	count(input.parsed_body) > 0
	is_number(server.max_batch)
	count(input.parsed_body) <= server.max_batch
}

is_request(msg) if {
	is_object(msg)
	msg.jsonrpc == "2.0"
	is_string(msg.method)
	valid_id(msg.id)
}

valid_id(id) if is_string(id)

valid_id(id) if is_number(id)

is_notification(msg) if {
	is_object(msg)
	msg.jsonrpc == "2.0"
	is_string(msg.method)
	startswith(msg.method, "notifications/")
	not "id" in object.keys(msg)
}

# -- the rules ------------------------------------------------------------------------

permitted if {
	claims
	at_endpoint
	http.method == "POST"
	count(messages) > 0 # every over nothing would be true
	every msg in messages {
		message_permitted(msg)
	}
}

permitted if {
	claims
	at_endpoint
	http.method != "POST"
	http.method in server.session_methods
}

# tools/call: only a tool listed in data, and only with its scope.
message_permitted(msg) if {
	is_request(msg)
	msg.method == "tools/call"
	tool := server.tools[tool_name(msg)]
	is_string(tool.scope)
	tool.scope != ""
	tool.scope in bearer.scopes(claims)
}

# initialize, tools/list, ...: a request method listed in data. initialize
# must open a session on its own (MCP forbids it in a batch).
message_permitted(msg) if {
	is_request(msg)
	not msg.method in {"tools/call", "initialize"}
	scope_satisfied(server.methods[msg.method])
}

message_permitted(msg) if {
	is_request(msg)
	msg.method == "initialize"
	single_message
	scope_satisfied(server.methods.initialize)
}

message_permitted(msg) if {
	is_notification(msg)
	scope_satisfied(server.notifications[msg.method])
}

# A helper rule, not "not server.tools[tool_name(msg)]": OPA evaluates a call
# nested in a negated expression before the negation, so an undefined
# tool_name would make that expression fail instead of succeed.
known_tool(msg) if server.tools[tool_name(msg)]

tool_name(msg) := msg.params.name if {
	is_object(msg.params)
	is_string(msg.params.name)
}

scope_satisfied(rule) if {
	is_object(rule)
	not "scope" in object.keys(rule)
}

scope_satisfied(rule) if {
	is_string(rule.scope)
	rule.scope != ""
	rule.scope in bearer.scopes(claims)
}

# -- why not ----------------------------------------------------------------------

# MCP clients find the authorization server through resource_metadata (RFC 9728).
challenge := sprintf(`Bearer resource_metadata="%s"`, [server.resource_metadata]) if {
	is_string(server.resource_metadata)
} else := `Bearer realm="mcp"`

# Indices of the messages that are not permitted; the first one explains the deny.
refused_messages contains i if {
	some i, msg in messages
	not message_permitted(msg)
}

problem(msg) := [400, "not a JSON-RPC 2.0 request or notification"] if {
	not is_request(msg)
	not is_notification(msg)
} else := [400, "initialize must be sent alone"] if {
	msg.method == "initialize"
	not single_message
} else := [403, "unknown tool"] if {
	is_request(msg)
	msg.method == "tools/call"
	not known_tool(msg)
} else := [403, "the token lacks the scope this tool needs"] if {
	is_request(msg)
	msg.method == "tools/call"
} else := [403, "the token lacks the scope this method needs"] if {
	is_request(msg)
	server.methods[msg.method].scope
} else := [403, "the token lacks the scope this notification needs"] if {
	is_notification(msg)
	server.notifications[msg.method].scope
} else := [403, "this JSON-RPC method is not permitted"]

denial := http.deny(403, "not the MCP endpoint") if {
	not at_endpoint
} else := http.unauthorized("the MCP endpoint needs a bearer token", challenge) if {
	not http.headers.authorization
} else := http.unauthorized(
	"the Authorization header holds no valid bearer token",
	concat(", ", [challenge, `error="invalid_token"`]),
) if {
	not claims
} else := http.deny(403, "HTTP method not allowed on the MCP endpoint") if {
	http.method != "POST"
	not http.method in server.session_methods
} else := http.deny(413, "the request body is truncated") if {
	http.method == "POST"
	input.truncated_body == true
} else := http.deny(400, "the body is not a JSON-RPC message or a batch within the size limit") if {
	http.method == "POST"
	not messages
} else := http.deny(status, reason) if {
	http.method == "POST"
	[status, reason] := problem(messages[min(refused_messages)])
} else := http.deny(403, "not permitted")
