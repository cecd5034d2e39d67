#!/usr/bin/env bash
# Runs fake-apiserver's Go unit tests offline, with the same pinned GOPATH
# mode environment as build.sh.
#
# Usage: go_test.sh GOCACHE_DIR [go test flags...]
set -euo pipefail

if (($# < 1)); then
  echo "usage: $0 GOCACHE_DIR [go test flags...]" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
gocache="$(cd "$1" && pwd)"
shift

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
export CGO_ENABLED=0

cd "$here"
go vet .
go test -count=1 "$@" .
