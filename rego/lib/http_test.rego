package lib.http_test

import rego.v1

import data.lib.http

segments(parsed_path) := result if {
	result := http.path_segments with input as {"parsed_path": parsed_path}
}

test_canonical_paths_are_their_segments if {
	segments(["api", "orders", "7"]) == ["api", "orders", "7"]
	segments(["api", "orders", ""]) == ["api", "orders"] # a trailing slash
	segments([""]) == [] # the root
	segments([]) == []
}

test_dot_and_empty_segments_are_not_canonical if {
	every path in [["a", "..", "b"], ["a", "."], ["..", "a"], ["a", "", "b"], ["a", "", ""]] {
		not segments(path)
	}
}

test_malformed_parsed_path_is_not_canonical if {
	not segments("api/orders")
	not segments(["api", 7])
	not http.path_segments with input as {}
}

test_path_string if {
	http.path == "/api/orders" with input as {"parsed_path": ["api", "orders", ""]}
	http.path == "/" with input as {"parsed_path": [""]}
	not http.path with input as {"parsed_path": ["a", ".."]}
}

test_segments_of_data_paths if {
	http.segments_of("/api/orders/") == ["api", "orders"]
	http.segments_of("api") == ["api"]
	http.segments_of("/") == []
}

test_prefix_is_by_whole_segments if {
	http.has_prefix(["api", "orders", "7"], ["api", "orders"])
	http.has_prefix(["api"], ["api"])
	http.has_prefix(["api"], [])
	not http.has_prefix(["api", "ordersx"], ["api", "orders"])
	not http.has_prefix(["api"], ["api", "orders"])
}

test_deny_has_a_json_body if {
	d := http.deny(403, "because")
	d == {
		"allowed": false,
		"http_status": 403,
		"headers": {"content-type": "application/json"},
		"body": `{"error":"forbidden","reason":"because"}`,
	}
}

test_unauthorized_carries_the_challenge if {
	d := http.unauthorized("who are you", `Bearer realm="api"`)
	d.http_status == 401
	d.headers == {"content-type": "application/json", "www-authenticate": `Bearer realm="api"`}
	json.unmarshal(d.body) == {"error": "unauthorized", "reason": "who are you"}
}

test_request_parts if {
	doc := {"attributes": {"request": {"http": {"method": "PUT", "headers": {"a": "b"}}}}}
	http.method == "PUT" with input as doc
	http.headers == {"a": "b"} with input as doc
}
