"""opa-sidecar: a fail-closed Envoy ext_authz v3 sidecar in front of Open Policy Agent."""

__version__ = "0.1.0"
