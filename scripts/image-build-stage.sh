#!/usr/bin/env bash
# The build stage of the Dockerfile, as a script so that CI can run the very
# same commands without a container engine (test/image/image_test.sh).
#
#   scripts/image-build-stage.sh OUTDIR
#
# Configures a Release build in its own build directory (never build/, so a
# developer's tree is untouched), builds only the shipped targets, strips
# them and copies them to OUTDIR/istio-cni, OUTDIR/ambient-agent and
# OUTDIR/ambientctl.
# Environment: AMBIENT_IMAGE_BUILD_DIR (default <repo>/build-image; reused,
# so a second run is incremental), AMBIENT_JOBS (default: nproc).
# AMBIENT_IMAGE_REUSE_BUILD_DIR: a configured build dir that already builds
# both targets (the test suite's own): the configure step then runs in a
# scratch dir, so it is still checked, and the build step in that dir, so
# the test suite does not compile the world a second time.
# Needs the packages of `scripts/install-deps --build-only`.
set -euo pipefail
if (($# != 1)); then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
src=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${AMBIENT_IMAGE_BUILD_DIR:-$src/build-image}

if [[ -n ${AMBIENT_IMAGE_REUSE_BUILD_DIR:-} ]]; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  cmake -S "$src" -B "$scratch" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  build_dir=$AMBIENT_IMAGE_REUSE_BUILD_DIR
else
  cmake -S "$src" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
ninja -C "$build_dir" -j "${AMBIENT_JOBS:-$(nproc)}" istio-cni ambient-agent ambientctl

mkdir -p "$out"
for bin in istio-cni ambient-agent ambientctl; do
  # Strip a copy, so the build dir keeps its symbols (and stays incremental).
  strip --strip-all -o "$out/$bin.tmp" "$build_dir/bin/$bin"
  chmod 0755 "$out/$bin.tmp"
  mv -f "$out/$bin.tmp" "$out/$bin"
done
echo "image-build-stage: $out/istio-cni $out/ambient-agent $out/ambientctl"
