# Just-in-time grants: a workload may perform an action only while a grant
# held in data says so.
#
# The caller is input.source_principal: the identity of the peer certificate
# that Envoy verified (mTLS), e.g. a SPIFFE ID. Without mTLS there is none,
# and nothing is allowed.
#
# Data (at data.agents.jit_grants): grant id -> {
#   "subject":    the principal it is for,
#   "actions":    ["METHOD /path", ...], matched exactly against the request,
#   "not_before": RFC 3339 time, "not_after": RFC 3339 time
# }
# A grant is active from not_before (inclusive) to not_after (exclusive). A
# grant with a missing, malformed or inverted bound grants nothing, and never
# makes evaluation fail: one bad grant must not deny (or error) the others.
package agents.jit

import rego.v1

import data.lib.http

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": "{\"error\":\"forbidden\",\"reason\":\"denied\"}",
}

allow := {"allowed": true, "dynamic_metadata": {"jit_grant": active_grant}} if active_grant

allow := denial if not active_grant

action := concat(" ", [http.method, http.path])

# Ids of the grants that cover this caller and action now.
active_grant_ids contains id if {
	subject := input.source_principal
	is_string(subject)
	subject != ""
	some id, grant in data.agents.jit_grants
	is_object(grant)
	grant.subject == subject
	is_array(grant.actions)
	action in grant.actions
	[not_before, not_after] := window(grant)
	now := time.now_ns()
	not_before <= now
	now < not_after
}

# One grant is named in the answer; the smallest id, so the value is unique.
active_grant := min(active_grant_ids) if count(active_grant_ids) > 0

# The [start, end) of a grant in nanoseconds, when both bounds are valid. An
# inverted or empty window holds no instant, so it grants nothing.
window(grant) := [not_before, not_after] if {
	not_before := timestamp_ns(grant.not_before)
	not_after := timestamp_ns(grant.not_after)
}

# An RFC 3339 timestamp in nanoseconds since the epoch; undefined for anything
# time.parse_rfc3339_ns would reject. That builtin raises an error on bad
# input, and an error is not "no": with strict builtin errors it fails the
# whole decision, without them it leaves an expression undefined, which a
# `not` would turn into true. So it only ever sees strings checked here.
timestamp_ns(value) := time.parse_rfc3339_ns(value) if {
	is_string(value)
	[[_, y, m, d]] := regex.find_all_string_submatch_n(rfc3339_pattern, value, 1)
	year := to_number(y)
	month := to_number(m)
	1900 <= year
	year <= 2199 # well inside the nanosecond range (1678 to 2262), whatever the offset
	1 <= month
	month <= 12
	1 <= to_number(d)
	to_number(d) <= days_in_month(year, month)
}

# Upper-case T and Z, 24-hour clock, no leap second, offsets within a day.
rfc3339_pattern := `^(\d{4})-(\d{2})-(\d{2})T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$`

days_in_month(year, 2) := 29 if leap_year(year)

days_in_month(year, 2) := 28 if not leap_year(year)

days_in_month(_, month) := 30 if month in {4, 6, 9, 11}

days_in_month(_, month) := 31 if month in {1, 3, 5, 7, 8, 10, 12}

leap_year(year) if {
	year % 4 == 0
	year % 100 != 0
}

leap_year(year) if year % 400 == 0

denial := http.deny(403, "no verified peer identity") if {
	not input.source_principal
} else := http.deny(403, "the request path is not canonical") if {
	not http.path_segments
} else := http.deny(403, "no grant covers this action now")
