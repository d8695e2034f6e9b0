#!/usr/bin/env bash
# Put the OPA-Envoy plugin, the peer the differential tests compare the sidecar
# with (tests/peer/), in DEST (default .tools/bin, git-ignored). It is never a
# dependency of the sidecar. Built with `go install` from the Go module proxy,
# like OPA (scripts/install-opa.sh), sharing Go's build and module caches.
#
# When it cannot be built (no Go, or the proxy does not serve the module), the
# peer tests compare with the plugin as documented instead; this says so and
# exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

PLUGIN_VERSION=${PLUGIN_VERSION:-v1.19.1-envoy}
module=github.com/open-policy-agent/opa-envoy-plugin
dest=${1:-.tools/bin}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
target=$dest/opa-envoy-plugin

if [[ -x $target ]]; then
    echo "OPA-Envoy plugin: $target"
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "OPA-Envoy plugin: not built (no Go); tests/peer compares with the plugin as documented"
    exit 0
fi
echo "building the OPA-Envoy plugin $PLUGIN_VERSION (go install, module proxy)" >&2
if ! GOBIN=$dest GOFLAGS=-buildvcs=false go install "$module/cmd/opa-envoy-plugin@$PLUGIN_VERSION" 2>"$dest/.install.log"; then
    sed 's/^/  /' "$dest/.install.log" >&2
    echo "OPA-Envoy plugin: not built (the Go module proxy does not serve $module@$PLUGIN_VERSION);" \
        "tests/peer compares with the plugin as documented"
    exit 0
fi
echo "OPA-Envoy plugin: $target"
