package agents.jit_test

import rego.v1

import data.agents.jit

deployer := "spiffe://example.org/ns/ops/sa/deploy-agent"

restart := "POST /deployments/web/restart"

# 2026-01-01T00:00:00Z
noon_ns := 1767225600000000000

hour_ns := 3600000000000

grant := {
	"subject": deployer,
	"actions": [restart, "GET /deployments/web"],
	"not_before": "2025-12-31T23:00:00Z",
	"not_after": "2026-01-01T01:00:00Z",
}

jit_input(principal, method, path) := {
	"attributes": {"request": {"http": {"method": method, "path": concat("/", array.concat([""], path)), "headers": {}}}},
	"parsed_path": path,
	"parsed_query": {},
	"source_principal": principal,
}

restart_input := jit_input(deployer, "POST", ["deployments", "web", "restart"])

decide(doc, grants, now_ns) := decision if {
	decision := jit.allow with input as doc
		with data.agents.jit_grants as grants
		with time.now_ns as now_ns
}

denied(decision, reason) if {
	decision.allowed == false
	decision.http_status == 403
	json.unmarshal(decision.body).reason == reason
}

# -- inside and outside the window ---------------------------------------------------

test_action_inside_the_window_is_allowed if {
	d := decide(restart_input, {"g-1": grant}, noon_ns)
	d.allowed == true
	d.dynamic_metadata == {"jit_grant": "g-1"}
}

test_window_start_is_inclusive_and_end_exclusive if {
	decide(restart_input, {"g-1": grant}, noon_ns - hour_ns).allowed == true
	denied(decide(restart_input, {"g-1": grant}, (noon_ns - hour_ns) - 1), "no grant covers this action now")
	decide(restart_input, {"g-1": grant}, (noon_ns + hour_ns) - 1).allowed == true
	denied(decide(restart_input, {"g-1": grant}, noon_ns + hour_ns), "no grant covers this action now")
}

test_expired_grant_is_denied if {
	denied(decide(restart_input, {"g-1": grant}, noon_ns + 2 * hour_ns), "no grant covers this action now")
}

test_future_grant_is_denied if {
	denied(decide(restart_input, {"g-1": grant}, noon_ns - 2 * hour_ns), "no grant covers this action now")
}

test_offsets_and_fractions_are_understood if {
	# 00:30+01:00 is 23:30Z the day before; the end is half a second past noon.
	shifted := object.union(grant, {"not_before": "2026-01-01T00:30:00+01:00", "not_after": "2026-01-01T00:00:00.5Z"})
	decide(restart_input, {"g-1": shifted}, noon_ns).allowed == true
	decide(restart_input, {"g-1": shifted}, noon_ns + 499999999).allowed == true
	denied(decide(restart_input, {"g-1": shifted}, noon_ns + 500000000), "no grant covers this action now")
	denied(decide(restart_input, {"g-1": shifted}, noon_ns - 31 * 60000000000), "no grant covers this action now")
}

# -- subject and action ----------------------------------------------------------------

test_other_subject_is_denied if {
	doc := jit_input("spiffe://example.org/ns/ops/sa/other", "POST", ["deployments", "web", "restart"])
	denied(decide(doc, {"g-1": grant}, noon_ns), "no grant covers this action now")
}

test_missing_peer_identity_is_denied if {
	doc := object.remove(restart_input, ["source_principal"])
	denied(decide(doc, {"g-1": grant}, noon_ns), "no verified peer identity")
}

test_other_actions_are_denied if {
	every doc in [
		jit_input(deployer, "DELETE", ["deployments", "web"]),
		jit_input(deployer, "POST", ["deployments", "web", "restart", "now"]),
		jit_input(deployer, "POST", ["deployments", "web"]),
		jit_input(deployer, "post", ["deployments", "web", "restart"]),
	] {
		denied(decide(doc, {"g-1": grant}, noon_ns), "no grant covers this action now")
	}
}

test_every_listed_action_is_allowed if {
	decide(jit_input(deployer, "GET", ["deployments", "web"]), {"g-1": grant}, noon_ns).allowed == true
	decide(jit_input(deployer, "GET", ["deployments", "web", ""]), {"g-1": grant}, noon_ns).allowed == true
}

test_non_canonical_path_is_denied if {
	doc := jit_input(deployer, "POST", ["deployments", "x", "..", "web", "restart"])
	denied(decide(doc, {"g-1": grant}, noon_ns), "the request path is not canonical")
}

test_actions_must_be_a_list if {
	broken := object.union(grant, {"actions": restart})
	denied(decide(restart_input, {"g-1": broken}, noon_ns), "no grant covers this action now")
}

test_the_smallest_active_grant_id_is_named if {
	d := decide(restart_input, {"g-2": grant, "g-1": grant, "g-0": object.union(grant, {"subject": "x"})}, noon_ns)
	d.dynamic_metadata.jit_grant == "g-1"
}

test_no_grants_in_data_deny if {
	denied(decide(restart_input, {}, noon_ns), "no grant covers this action now")
	d := jit.allow with input as restart_input with time.now_ns as noon_ns
	d.allowed == false
}

# -- malformed grants grant nothing, and break nothing -----------------------------------------

malformed_grants := {
	"missing-not-before": object.remove(grant, ["not_before"]),
	"missing-not-after": object.remove(grant, ["not_after"]),
	"null-bound": object.union(grant, {"not_after": null}),
	"number-bound": object.union(grant, {"not_before": 1767222000}),
	"no-timezone": object.union(grant, {"not_before": "2025-12-31T23:00:00"}),
	"space-separator": object.union(grant, {"not_before": "2025-12-31 23:00:00Z"}),
	"lower-case": object.union(grant, {"not_before": "2025-12-31t23:00:00z"}),
	"date-only": object.union(grant, {"not_after": "2026-01-02"}),
	"day-out-of-range": object.union(grant, {"not_after": "2026-02-30T00:00:00Z"}),
	"month-out-of-range": object.union(grant, {"not_after": "2026-13-01T00:00:00Z"}),
	"hour-24": object.union(grant, {"not_after": "2026-01-01T24:00:00Z"}),
	"leap-second": object.union(grant, {"not_after": "2026-01-01T23:59:60Z"}),
	"offset-out-of-range": object.union(grant, {"not_after": "2026-01-01T01:00:00+24:00"}),
	"year-beyond-nanoseconds": object.union(grant, {"not_after": "2999-01-01T00:00:00Z"}),
	"year-zero": object.union(grant, {"not_before": "0000-01-01T00:00:00Z"}),
	"ten-fraction-digits": object.union(grant, {"not_after": "2026-01-01T01:00:00.1234567891Z"}),
	"inverted": object.union(grant, {"not_before": "2026-01-01T01:00:00Z", "not_after": "2025-12-31T23:00:00Z"}),
	"empty-window": object.union(grant, {"not_before": "2026-01-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z"}),
	"not-an-object": "g-1",
}

test_each_malformed_grant_grants_nothing if {
	every id, bad in malformed_grants {
		denied(decide(restart_input, {id: bad}, noon_ns), "no grant covers this action now")
	}
}

test_malformed_grants_do_not_stop_a_valid_one if {
	d := decide(restart_input, object.union(malformed_grants, {"valid": grant}), noon_ns)
	d.allowed == true
	d.dynamic_metadata.jit_grant == "valid"
}

# -- timestamps ------------------------------------------------------------------------

test_valid_timestamps_parse if {
	jit.timestamp_ns("2026-01-01T00:00:00Z") == noon_ns
	jit.timestamp_ns("2026-01-01T01:00:00+01:00") == noon_ns
	jit.timestamp_ns("2025-12-31T19:00:00-05:00") == noon_ns
	jit.timestamp_ns("2026-01-01T00:00:00.000000001Z") == noon_ns + 1
}

test_leap_days_follow_the_gregorian_calendar if {
	jit.timestamp_ns("2028-02-29T00:00:00Z")
	jit.timestamp_ns("2000-02-29T00:00:00Z")
	not jit.timestamp_ns("2026-02-29T00:00:00Z")
	not jit.timestamp_ns("2100-02-29T00:00:00Z")
	jit.timestamp_ns("2026-04-30T00:00:00Z")
	not jit.timestamp_ns("2026-04-31T00:00:00Z")
	jit.timestamp_ns("2026-12-31T23:59:59Z")
}
