"""Benchmark harness for the sidecar: ``python -m bench`` (see bench/README.md)."""
