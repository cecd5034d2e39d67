#!/usr/bin/env bash
# Builds fake-apiserver offline.
#
# Usage: build.sh OUT_BINARY GOCACHE_DIR
#
# Standard library only, built in GOPATH mode (GO111MODULE=off) like
# cni-driver: there is no network for a module download and no go.mod to
# resolve. Everything the go tool might pick up from the caller's
# environment or ~/.config/go/env is pinned so the build behaves the same
# for a developer, CI and CMake.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 OUT_BINARY GOCACHE_DIR" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
gocache="$2"

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: 'go' not found; run scripts/install-deps (golang-go)" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")" "$gocache"
# Absolute paths: go resolves -o and GOCACHE relative to its own cwd.
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
gocache="$(cd "$gocache" && pwd)"

# A throwaway GOPATH keeps any write the go tool might attempt (e.g. pkg/)
# out of the caller's home and the root-owned Debian tree.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

export GO111MODULE=off
export GOPATH="$scratch"
export GOCACHE="$gocache"
export GOFLAGS=
export GOPROXY=off
export GOSUMDB=off
export GOENV=off
export GOTOOLCHAIN=local
# Static binary: no dependency on the host's libc at test time.
export CGO_ENABLED=0

cd "$here"
go build -trimpath -o "$out" .
