# Entry points for a fresh machine. Each target sets up .venv first.
VENV := .venv/bin

.PHONY: setup system-tools test lint demo protos bench

setup:
	./scripts/setup-venv.sh

system-tools:
	./scripts/install-system-tools.sh

# The whole test suite: lint, types, then every test. .ci/run calls this.
test: setup system-tools lint
	$(VENV)/pytest

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

# OPA (a real `opa` if on PATH, else the test server on the real engine),
# the sidecar and Envoy on this machine, with a guided tour.
demo: setup
	$(VENV)/python -m scripts.demo

protos: setup
	$(VENV)/python scripts/gen_protos.py

# The benchmark harness (see bench/README or bench/REPORT.md).
bench: setup system-tools
	$(VENV)/python -m bench
