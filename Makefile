# Entry points for a fresh machine. Each target sets up .venv first.
VENV := .venv/bin

.PHONY: setup system-tools opa peer test lint demo protos bench

setup:
	./scripts/setup-venv.sh

system-tools:
	./scripts/install-system-tools.sh

# The real OPA server, built from the Go module proxy into .venv/bin (without Go:
# an opa on PATH, else the test server on the OPA engine; it says which).
opa: setup
	./scripts/install-opa.sh

# The OPA-Envoy plugin in .tools/bin, for tests/peer only (it says when it cannot be built).
peer: setup
	./scripts/install-opa-envoy-plugin.sh

# The whole test suite: lint, types, then every test. .ci/run calls this.
test: setup system-tools opa peer lint
	$(VENV)/pytest

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

# OPA, the sidecar and Envoy on this machine, with a guided tour.
demo: setup opa
	$(VENV)/python -m scripts.demo

protos: setup
	$(VENV)/python scripts/gen_protos.py

# The benchmark harness (see bench/README or bench/REPORT.md).
bench: setup system-tools opa
	$(VENV)/python -m bench
