package agents.mcp_test

import rego.v1

import data.agents.mcp
import data.lib.fixtures_test as fixtures

mcp_input(method, path, headers, body, truncated) := {
	"attributes": {"request": {"http": {"method": method, "path": concat("/", array.concat([""], path)), "headers": headers}}},
	"parsed_path": path,
	"parsed_query": {},
	"parsed_body": body,
	"truncated_body": truncated,
}

decide_at(doc, now_ns) := decision if {
	decision := mcp.allow with input as doc
		with data.agents.jwks as fixtures.jwks
		with time.now_ns as now_ns
}

decide(doc) := decide_at(doc, fixtures.now_ns)

# The server's data with one member replaced. (A `with` on a path below the one
# the policy reads would merge objects into the data rather than replace them.)
server_with(path, value) := json.patch(data.agents.mcp_server, [{"op": "add", "path": path, "value": value}])

bearer(name) := {
	"authorization": concat(" ", ["Bearer", fixtures.tokens[name]]),
	"content-type": "application/json",
}

# A POST of `body` to /mcp by the holder of token `name`.
post(name, body) := decide(mcp_input("POST", ["mcp"], bearer(name), body, false))

call(id, method, params) := {"jsonrpc": "2.0", "id": id, "method": method, "params": params}

tool_call(id, tool) := call(id, "tools/call", {"name": tool, "arguments": {"query": "rotate keys"}})

notification(method) := {"jsonrpc": "2.0", "method": method}

initialize := call(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "agent", "version": "1"}})

denied(decision, status, reason) if {
	decision.allowed == false
	decision.http_status == status
	json.unmarshal(decision.body).reason == reason
}

# -- tools/call -------------------------------------------------------------------------

test_tool_call_with_the_tool_scope_is_allowed if {
	d := post("mcp_researcher", tool_call(7, "search_docs"))
	d.allowed == true
	d.headers == {"x-auth-subject": "agent-researcher"}
}

test_tool_call_without_the_tool_scope_is_denied if {
	denied(post("mcp_researcher", tool_call(7, "create_ticket")), 403, "the token lacks the scope this tool needs")
	denied(post("mcp_no_scope", tool_call(7, "search_docs")), 403, "the token lacks the scope this tool needs")
}

test_unknown_tool_is_denied if {
	denied(post("mcp_researcher", tool_call(7, "delete_everything")), 403, "unknown tool")
}

test_tool_call_without_a_tool_name_is_denied if {
	denied(post("mcp_researcher", call(7, "tools/call", {})), 403, "unknown tool")
	denied(post("mcp_researcher", call(7, "tools/call", {"name": ["search_docs"]})), 403, "unknown tool")
	denied(post("mcp_researcher", call(7, "tools/call", "search_docs")), 403, "unknown tool")
}

test_tool_call_as_a_notification_is_denied if {
	d := post("mcp_researcher", {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "search_docs"}})
	denied(d, 400, "not a JSON-RPC 2.0 request or notification")
}

test_tool_without_a_scope_in_data_cannot_be_called if {
	every tool in [{}, {"scope": ""}, {"scope": ["tools:search_docs"]}] {
		server := server_with("/tools/search_docs", tool)
		d := post("mcp_researcher", tool_call(7, "search_docs")) with data.agents.mcp_server as server
		denied(d, 403, "the token lacks the scope this tool needs")
	}
}

test_tools_call_listed_as_a_plain_method_still_needs_the_tool_scope if {
	server := server_with("/methods/tools~1call", {})
	d := post("mcp_no_scope", tool_call(7, "search_docs")) with data.agents.mcp_server as server
	denied(d, 403, "the token lacks the scope this tool needs")
}

# -- initialize, tools/list and notifications follow data ----------------------------------

test_initialize_needs_only_a_verified_token if {
	post("mcp_no_scope", initialize).allowed == true
}

test_tools_list_needs_its_scope if {
	post("mcp_researcher", call(2, "tools/list", {})).allowed == true
	denied(post("mcp_no_scope", call(2, "tools/list", {})), 403, "the token lacks the scope this method needs")
}

test_method_not_in_data_is_denied if {
	denied(post("mcp_researcher", call(3, "resources/read", {"uri": "file:///etc/passwd"})), 403, "this JSON-RPC method is not permitted")
}

test_method_rule_with_a_malformed_scope_is_denied if {
	every rule in [{"scope": 5}, {"scope": ""}, {"scope": ["mcp:tools"]}, "open", true] {
		server := server_with("/methods/tools~1list", rule)
		d := post("mcp_researcher", call(2, "tools/list", {})) with data.agents.mcp_server as server
		d.allowed == false
		d.http_status == 403
	}
}

test_listed_notifications_are_allowed if {
	post("mcp_no_scope", notification("notifications/initialized")).allowed == true
	post("mcp_no_scope", notification("notifications/cancelled")).allowed == true
}

test_unlisted_notification_is_denied if {
	denied(post("mcp_researcher", notification("notifications/roots/list_changed")), 403, "this JSON-RPC method is not permitted")
}

test_notification_rule_with_a_scope_needs_it if {
	server := server_with("/notifications/notifications~1initialized", {"scope": "mcp:tools"})
	ok := post("mcp_researcher", notification("notifications/initialized")) with data.agents.mcp_server as server
	ok.allowed == true
	no := post("mcp_no_scope", notification("notifications/initialized")) with data.agents.mcp_server as server
	denied(no, 403, "the token lacks the scope this notification needs")
}

test_a_method_name_outside_notifications_is_not_a_notification if {
	d := post("mcp_researcher", notification("ping"))
	denied(d, 400, "not a JSON-RPC 2.0 request or notification")
}

# -- malformed and truncated bodies ------------------------------------------------------

test_truncated_body_is_denied if {
	d := decide(mcp_input("POST", ["mcp"], bearer("mcp_researcher"), null, true))
	denied(d, 413, "the request body is truncated")
}

test_missing_or_non_json_body_is_denied if {
	every body in [null, "tools/call", 42, true] {
		denied(post("mcp_researcher", body), 400, "the body is not a JSON-RPC message or a batch within the size limit")
	}
}

test_body_without_the_truncation_flag_is_denied if {
	doc := object.remove(mcp_input("POST", ["mcp"], bearer("mcp_researcher"), tool_call(1, "search_docs"), false), ["truncated_body"])
	decide(doc).allowed == false
}

test_malformed_messages_are_denied if {
	every msg in [
		{"jsonrpc": "1.0", "id": 1, "method": "ping"},
		{"id": 1, "method": "ping"},
		{"jsonrpc": "2.0", "id": null, "method": "ping"},
		{"jsonrpc": "2.0", "id": {"n": 1}, "method": "ping"},
		{"jsonrpc": "2.0", "id": 1, "method": 5},
		{"jsonrpc": "2.0", "id": 1, "result": {}},
	] {
		denied(post("mcp_researcher", msg), 400, "not a JSON-RPC 2.0 request or notification")
	}
}

test_string_ids_are_accepted if {
	post("mcp_researcher", call("req-1", "ping", {})).allowed == true
}

# -- batches ---------------------------------------------------------------------------

test_batch_of_permitted_calls_is_allowed if {
	batch := [call(1, "tools/list", {}), tool_call(2, "search_docs"), notification("notifications/cancelled")]
	post("mcp_researcher", batch).allowed == true
}

test_batch_with_one_forbidden_call_is_denied if {
	forbidden_tool := [tool_call(1, "search_docs"), tool_call(2, "create_ticket")]
	denied(post("mcp_researcher", forbidden_tool), 403, "the token lacks the scope this tool needs")
	unknown_tool := [call(1, "ping", {}), tool_call(2, "nope"), tool_call(3, "search_docs")]
	denied(post("mcp_researcher", unknown_tool), 403, "unknown tool")
	malformed := [tool_call(1, "search_docs"), {"jsonrpc": "2.0"}]
	denied(post("mcp_researcher", malformed), 400, "not a JSON-RPC 2.0 request or notification")
}

test_initialize_inside_a_batch_is_denied if {
	denied(post("mcp_researcher", [initialize]), 400, "initialize must be sent alone")
	denied(post("mcp_researcher", [initialize, call(2, "ping", {})]), 400, "initialize must be sent alone")
}

test_empty_batch_is_denied if {
	denied(post("mcp_researcher", []), 400, "the body is not a JSON-RPC message or a batch within the size limit")
}

test_batch_over_the_limit_is_denied if {
	batch := [call(i, "ping", {}) | some i in numbers.range(1, 3)]
	d := post("mcp_researcher", batch) with data.agents.mcp_server.max_batch as 2
	denied(d, 400, "the body is not a JSON-RPC message or a batch within the size limit")
	ok := post("mcp_researcher", batch) with data.agents.mcp_server.max_batch as 3
	ok.allowed == true
}

test_batches_need_a_limit_in_data if {
	server := object.remove(data.agents.mcp_server, ["max_batch"])
	d := post("mcp_researcher", [call(1, "ping", {})]) with data.agents.mcp_server as server
	d.allowed == false
	post("mcp_researcher", call(1, "ping", {})).allowed == true # a single message needs no limit
}

# -- the caller's token -----------------------------------------------------------------

test_missing_token_is_401_with_resource_metadata if {
	d := decide(mcp_input("POST", ["mcp"], {"content-type": "application/json"}, initialize, false))
	denied(d, 401, "the MCP endpoint needs a bearer token")
	d.headers["www-authenticate"] == `Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource"`
}

test_token_for_another_audience_is_401 if {
	d := post("alice", initialize)
	denied(d, 401, "the Authorization header holds no valid bearer token")
	endswith(d.headers["www-authenticate"], `, error="invalid_token"`)
}

test_expired_token_is_401 if {
	doc := mcp_input("POST", ["mcp"], bearer("mcp_researcher"), tool_call(1, "search_docs"), false)
	decide_at(doc, fixtures.now_ns + 3599000000000).allowed == true
	denied(decide_at(doc, fixtures.now_ns + 3601000000000), 401, "the Authorization header holds no valid bearer token")
}

test_forged_tokens_are_401 if {
	every name in ["mcp_hs256_with_public_key", "mcp_alg_none", "mcp_untrusted_key", "mcp_tampered"] {
		denied(post(name, initialize), 401, "the Authorization header holds no valid bearer token")
	}
}

# -- HTTP around the JSON-RPC ------------------------------------------------------------

test_session_methods_need_a_token if {
	decide(mcp_input("GET", ["mcp"], bearer("mcp_no_scope"), null, false)).allowed == true
	decide(mcp_input("DELETE", ["mcp"], bearer("mcp_no_scope"), null, false)).allowed == true
	denied(decide(mcp_input("GET", ["mcp"], {}, null, false)), 401, "the MCP endpoint needs a bearer token")
}

test_other_http_methods_are_denied if {
	d := decide(mcp_input("PUT", ["mcp"], bearer("mcp_researcher"), tool_call(1, "search_docs"), false))
	denied(d, 403, "HTTP method not allowed on the MCP endpoint")
}

test_other_paths_are_denied if {
	every path in [["other"], ["mcp", "x"], ["mcp", "..", "mcp"], []] {
		d := decide(mcp_input("POST", path, bearer("mcp_researcher"), tool_call(1, "search_docs"), false))
		denied(d, 403, "not the MCP endpoint")
	}
}

test_trailing_slash_is_the_endpoint if {
	decide(mcp_input("POST", ["mcp", ""], bearer("mcp_researcher"), tool_call(1, "search_docs"), false)).allowed == true
}
