#!/usr/bin/env bash
# The build stage of the Dockerfile, as a script so that CI can run the very
# same commands without a container engine (test/image/image_test.sh).
#
#   scripts/image-build-stage.sh OUTDIR
#
# Configures a Release build in its own build directory (never build/, so a
# developer's tree is untouched), builds only the two shipped targets,
# strips them and copies them to OUTDIR/istio-cni and OUTDIR/ambient-agent.
# Environment: AMBIENT_IMAGE_BUILD_DIR (default <repo>/build-image; reused,
# so a second run is incremental), AMBIENT_JOBS (default: nproc).
# Needs the packages of `scripts/install-deps --build-only`.
set -euo pipefail
if (($# != 1)); then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
src=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${AMBIENT_IMAGE_BUILD_DIR:-$src/build-image}

cmake -S "$src" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build_dir" -j "${AMBIENT_JOBS:-$(nproc)}" istio-cni ambient-agent

mkdir -p "$out"
for bin in istio-cni ambient-agent; do
  # Strip a copy, so the build dir keeps its symbols (and stays incremental).
  strip --strip-all -o "$out/$bin.tmp" "$build_dir/bin/$bin"
  chmod 0755 "$out/$bin.tmp"
  mv -f "$out/$bin.tmp" "$out/$bin"
done
echo "image-build-stage: $out/istio-cni $out/ambient-agent"
