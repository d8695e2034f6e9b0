# Rules for the stand-in OPA's tests: each one exercises one REST behaviour.
package test.authz

import rego.v1

default allow := false

allow if input.user == "admin"

# No default: undefined unless the user is alice.
alice_only if input.user == "alice"

whoami := input.user

# Both bodies true at once: a complete-rule conflict (500).
conflict := 1 if input.a

conflict := 2 if input.b

# A built-in error for a non-numeric string.
number := to_number(input.s)

greeting := {"hello": input.user, "tags": {"b", "a"}, "html": "<b>&</b>"}
