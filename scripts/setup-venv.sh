#!/usr/bin/env bash
# Create (or refresh) .venv with the sidecar, its development tools and the
# OPA engine used by the test server. Safe to run again: it reinstalls only
# when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "opa-sidecar needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    # The OPA Go engine's wheel declares Python >= 3.14 but is a plain ctypes
    # library that runs on 3.11; its metadata is the only obstacle.
    .venv/bin/python -m pip install --quiet --ignore-requires-python 'opa-golib-python-bindings==0.4.4'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
