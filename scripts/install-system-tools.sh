#!/usr/bin/env bash
# System packages the benchmark harness and its smoke test drive: nginx (a
# zero-cost OPA), h2load (gRPC load) and wrk (HTTP load). Installs only what is
# missing; needs root (or sudo) the first time.
set -euo pipefail

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v wrk >/dev/null || missing+=(wrk)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
