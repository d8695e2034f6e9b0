"""Deployment artifacts: Envoy configuration, Kubernetes manifests, and the small
helpers that render them and run the stack on one machine (demo and end-to-end tests)."""
