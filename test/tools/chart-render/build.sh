#!/usr/bin/env bash
# Builds chart-render offline against Debian's packaged sprig and yaml.v2.
#
# Usage: build.sh OUT_BINARY GOCACHE_DIR
#
# GOPATH mode (GO111MODULE=off) because golang-github-masterminds-sprig-dev
# and golang-gopkg-yaml.v2-dev ship plain GOPATH sources under
# /usr/share/gocode/src, and there is no network for a module download
# (sprig's own "semver/v3" import resolves there through GOPATH mode's
# minimal module compatibility). Everything the go tool might pick up from
# the caller's environment or ~/.config/go/env is pinned so the build
# behaves the same for a developer, CI and CMake.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 OUT_BINARY GOCACHE_DIR" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
gocache="$2"
debian_gopath=/usr/share/gocode

for pkg in github.com/Masterminds/sprig:golang-github-masterminds-sprig-dev \
           gopkg.in/yaml.v2:golang-gopkg-yaml.v2-dev; do
  if [[ ! -d "$debian_gopath/src/${pkg%%:*}" ]]; then
    echo "build.sh: ${pkg%%:*} not found under $debian_gopath; run scripts/install-deps (${pkg#*:})" >&2
    exit 1
  fi
done

# shellcheck source=../go-offline.sh
source "$here/../go-offline.sh"
go_offline_env "$gocache" "$debian_gopath"
mkdir -p "$(dirname "$out")"
# Absolute: go resolves -o relative to its own cwd.
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

cd "$here"
go build -p 1 -trimpath -o "$out" .
