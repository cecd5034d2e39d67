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
# shellcheck source=../go-offline.sh
source "$here/../go-offline.sh"
go_offline_env "$1"
shift

cd "$here"
go vet .
go test -count=1 "$@" .
