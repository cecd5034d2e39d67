#!/usr/bin/env bash
# Builds cni-driver offline against Debian's packaged libcni.
#
# Usage: build.sh OUT_BINARY GOCACHE_DIR
#
# GOPATH mode (GO111MODULE=off) because golang-github-appc-cni-dev ships
# plain GOPATH sources under /usr/share/gocode/src with no module metadata,
# and there is no network for a module download. Everything the go tool
# might pick up from the caller's environment or ~/.config/go/env is pinned
# so the build behaves the same for a developer, CI and CMake.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 OUT_BINARY GOCACHE_DIR" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
gocache="$2"
debian_gopath=/usr/share/gocode

if [[ ! -d "$debian_gopath/src/github.com/containernetworking/cni/libcni" ]]; then
  echo "build.sh: libcni not found under $debian_gopath; run scripts/install-deps (golang-github-appc-cni-dev)" >&2
  exit 1
fi

# shellcheck source=../go-offline.sh
source "$here/../go-offline.sh"
go_offline_env "$gocache" "$debian_gopath"
mkdir -p "$(dirname "$out")"
# Absolute: go resolves -o relative to its own cwd.
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

cd "$here"
go build -trimpath -o "$out" ./main.go
