package test.authz_test

import rego.v1

import data.test.authz

test_admin_allowed if authz.allow with input as {"user": "admin"}

test_bob_denied if not authz.allow with input as {"user": "bob"}
