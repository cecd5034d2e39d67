#!/usr/bin/env bash
# The plugin is copied onto arbitrary hosts: it may need glibc and nothing
# else (no libstdc++, libgcc_s, libcurl, TLS libraries).
set -euo pipefail
bin=$1
deps=$(ldd "$bin" | awk '{print $1}')
echo "$deps"
bad=$(echo "$deps" | grep -Ev '^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|/lib64/ld-linux-x86-64\.so\.2|ld-linux.*)$' || true)
if [[ -n "$bad" ]]; then
  echo "istio-cni links more than glibc: $bad" >&2
  exit 1
fi
echo "istio-cni needs only glibc"
