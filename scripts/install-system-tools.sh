#!/usr/bin/env bash
# System packages the benchmark harness and its smoke test drive: nginx (a
# zero-cost OPA), h2load (gRPC load) and wrk (HTTP load); and redis-server, the
# deny memory's shared store in its tests and benchmark. Installs only what is
# missing; needs root (or sudo) the first time.
set -euo pipefail

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
