#!/usr/bin/env bash
# The plugin is copied onto arbitrary hosts: it may need glibc and nothing
# else (no libstdc++, libgcc_s, libcurl, TLS libraries). It is built fully
# static, so it needs nothing at all; a dynamic build may need glibc only.
set -euo pipefail
bin=$1
if ! readelf -lW "$bin" | grep -q 'INTERP'; then
  if readelf -dW "$bin" | grep -q NEEDED; then
    echo "istio-cni has no interpreter but needs shared libraries" >&2
    exit 1
  fi
  echo "istio-cni is static: needs no shared library"
  exit 0
fi
deps=$(ldd "$bin" | awk '{print $1}')
echo "$deps"
bad=$(echo "$deps" | grep -Ev '^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|/lib64/ld-linux-x86-64\.so\.2|ld-linux.*)$' || true)
if [[ -n "$bad" ]]; then
  echo "istio-cni links more than glibc: $bad" >&2
  exit 1
fi
echo "istio-cni needs only glibc"
