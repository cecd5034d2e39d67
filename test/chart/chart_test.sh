#!/usr/bin/env bash
# The chart test: first chart-render's own tests (that it renders with Helm's
# semantics), then charts/ambient-cni rendered by it and checked object by
# object (chart_test.go). Offline GOPATH mode against Debian's Go packages,
# pinned as in test/tools/chart-render/build.sh.
#
# Usage: chart_test.sh CHART_RENDER_BIN GOCACHE_DIR [go test flags...]
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 CHART_RENDER_BIN GOCACHE_DIR [go test flags...]" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
gocache_dir="$2"
shift 2

if [[ ! -x "$bin" ]]; then
  echo "chart_test.sh: $bin not built (target chart-render)" >&2
  exit 1
fi

# shellcheck source=../tools/go-offline.sh
source "$repo/test/tools/go-offline.sh"
go_offline_env "$gocache_dir" /usr/share/gocode

(cd "$repo/test/tools/chart-render" && go vet . && go test -p 1 -count=1 "$@" .)

export CHART_RENDER="$bin"
export CHART_DIR="$repo/charts/ambient-cni"
cd "$here"
go vet .
go test -p 1 -count=1 "$@" .
