# Sourced by the test tools' Go build and test scripts: the one offline,
# GOPATH-mode Go environment. Nothing the go tool might pick up from the
# caller's environment or ~/.config/go/env is left to chance, so a build
# behaves the same for a developer, CI and CMake; there is no network for a
# module download.
#
# go_offline_env GOCACHE_DIR [EXTRA_GOPATH]
#   exports the environment. A throwaway first GOPATH entry keeps any write
#   the go tool might attempt (e.g. pkg/) out of the caller's home and the
#   root-owned Debian tree; EXTRA_GOPATH (e.g. /usr/share/gocode, where
#   Debian's golang-*-dev packages put their sources) follows it. Removes
#   the scratch entry on exit. Sets $gocache to the absolute cache path.

go_offline_env() {
  if ! command -v go >/dev/null 2>&1; then
    echo "$0: 'go' not found; run scripts/install-deps (golang-go)" >&2
    exit 1
  fi
  mkdir -p "$1"
  # Absolute: go resolves GOCACHE relative to its own cwd.
  gocache="$(cd "$1" && pwd)"
  go_scratch="$(mktemp -d)"
  trap 'rm -rf "$go_scratch"' EXIT
  export GO111MODULE=off
  export GOPATH="$go_scratch${2:+:$2}"
  export GOCACHE="$gocache"
  export GOFLAGS=
  export GOPROXY=off
  export GOSUMDB=off
  export GOENV=off
  export GOTOOLCHAIN=local
  # Static binaries: no dependency on the host's libc at test time.
  export CGO_ENABLED=0
}
