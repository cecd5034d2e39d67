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


# shellcheck source=../go-offline.sh
source "$here/../go-offline.sh"
go_offline_env "$gocache"
mkdir -p "$(dirname "$out")"
# Absolute: go resolves -o relative to its own cwd.
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

cd "$here"
go build -trimpath -o "$out" .
