#!/usr/bin/env bash
# Put the real OPA server in DEST (default .venv/bin), built with `go install`
# from the Go module proxy. The tests, the demo and the benchmark use the `opa`
# found there. Go's build cache (GOCACHE) and module cache are kept between
# runs, so a rebuild on the same machine is quick; an `opa` already at the
# pinned version is kept as it is.
#
# Without Go: an `opa` on PATH is used (linked into DEST), else the tests fall
# back to the OPA test server on the OPA engine (tests/opa_server). With Go, a
# failed build fails: such a machine is meant to test against the real OPA. The
# last line printed says which OPA the tests will ask.
set -euo pipefail
cd "$(dirname "$0")/.."

OPA_VERSION=${OPA_VERSION:-v1.22.4}
dest=${1:-.venv/bin}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
target=$dest/opa

version_of() {
    "$1" version 2>/dev/null | sed -n 's/^Version: /v/p'
}

if [[ -x $target && ! -L $target && $(version_of "$target") == "$OPA_VERSION" ]]; then
    echo "OPA: $target ($OPA_VERSION)"
    exit 0
fi

if command -v go >/dev/null; then
    echo "building OPA $OPA_VERSION with $(go version | cut -d' ' -f3) (go install, module proxy)" >&2
    started=$SECONDS
    rm -f "$target"
    GOBIN=$dest GOFLAGS=-buildvcs=false go install "github.com/open-policy-agent/opa@$OPA_VERSION"
    echo "built in $((SECONDS - started)) s" >&2
    echo "OPA: $target ($(version_of "$target"))"
    exit 0
fi

found=$(command -v opa || true)
if [[ -n $found && $found != "$target" ]]; then
    ln -sf "$found" "$target"
    echo "OPA: $found ($(version_of "$found"), from PATH; no Go to build $OPA_VERSION)"
    exit 0
fi
rm -f "$target"
echo "OPA: the OPA test server (tests/opa_server): no Go to build OPA and no opa on PATH"
