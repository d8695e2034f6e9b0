"""Certificates and an Envoy bootstrap for TLS and mTLS tests, generated per test run."""
