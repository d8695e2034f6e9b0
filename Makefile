# Entry points for a fresh machine. Each target sets up .venv first.
VENV := .venv/bin

.PHONY: setup test lint demo protos

setup:
	./scripts/setup-venv.sh

# The whole test suite: lint, types, then every test. .ci/run calls this.
test: setup lint
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
