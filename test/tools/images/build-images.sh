#!/usr/bin/env bash
# Builds the test images as OCI image-layout tars that `ctr images import`
# takes, so the runtime tests need no registry:
#
#   OUTDIR/pause.tar    localhost/ambient-test/pause:1    static pause (pause.c), the sandbox image
#   OUTDIR/busybox.tar  localhost/ambient-test/busybox:1  busybox-static with every applet linked
#
# Layers are written reproducibly (sorted, owner 0, mtime 0, gzip -n), so
# the same inputs give the same digests.
#
#   build-images.sh OUTDIR
set -euo pipefail

if (($# != 1)); then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# blob FILE: moves FILE into the layout's blobs, prints its digest.
blob() {
  local d
  d=$(sha "$1")
  mv "$1" "$layout/blobs/sha256/$d"
  echo "$d"
}

# image NAME ROOTFS ENTRYPOINT-JSON: OUTDIR/NAME.tar from the ROOTFS dir.
image() {
  local name=$1 rootfs=$2 entrypoint=$3
  local ref="localhost/ambient-test/$name:1"
  layout=$work/$name-layout
  mkdir -p "$layout/blobs/sha256"

  tar -C "$rootfs" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -cf "$work/layer.tar" .
  local diff_id
  diff_id=$(sha "$work/layer.tar")
  gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"
  local layer_size layer
  layer_size=$(size "$work/layer.tar.gz")
  layer=$(blob "$work/layer.tar.gz")

  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$entrypoint" "$diff_id" >"$work/config.json"
  local config_size config
  config_size=$(size "$work/config.json")
  config=$(blob "$work/config.json")

  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest.json"
  local manifest_size manifest
  manifest_size=$(size "$work/manifest.json")
  manifest=$(blob "$work/manifest.json")

  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"1"}}]}' \
    "$manifest" "$manifest_size" "$arch" "$ref" >"$layout/index.json"

  tar -C "$layout" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -cf "$work/$name.tar" .
  mv "$work/$name.tar" "$out/$name.tar"
  rm -f "$work/layer.tar"
}

# pause: one static binary; the runtime makes /dev, /proc and /sys.
mkdir -p "$work/pause-root"
gcc -static -O2 -o "$work/pause-root/pause" "$here/pause.c"
strip "$work/pause-root/pause"
image pause "$work/pause-root" '["/pause"]'

# busybox: the static binary and a symlink per applet (sh, nc, wget, ip, ...),
# plus the few files its applets read.
root=$work/busybox-root
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
image busybox "$root" '["/bin/sh"]'
