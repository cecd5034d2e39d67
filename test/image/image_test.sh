#!/usr/bin/env bash
# The container image, tested by its pieces (there is no container engine in
# CI): the Dockerfile only runs repository scripts and reads one package list,
# so checking those checks what `docker build` would do.
#
#   image_test.sh SOURCE_DIR [REUSE_BUILD_DIR]
#
# (a) scripts/image-build-stage.sh, run as the build stage runs it, yields a
#     stripped ambient-agent and ambientctl, and a stripped istio-cni that
#     needs only glibc;
# (b) every shared library the built agent loads (ldd), and every program it
#     executes, comes from scripts/runtime-packages.txt or a package those
#     depend on;
# (c) the Dockerfile's runtime stage installs exactly that list (by reference)
#     and puts the plugin at /opt/cni/bin/istio-cni, the build stage runs the
#     two scripts, and scripts/install-deps installs the same list.
#
# With REUSE_BUILD_DIR (the suite's own build, when it is not a sanitizer
# build) the build stage's configure step runs in a scratch dir and its build
# step reuses that dir's objects. Without it, a Release build dir is cached
# in the working directory (ctest runs this in its binary dir), so only the
# first run compiles; AMBIENT_IMAGE_BUILD_DIR overrides the place.
set -euo pipefail
src=$(cd "${1:?usage: image_test.sh SOURCE_DIR [REUSE_BUILD_DIR]}" && pwd)
reuse=${2:-}
pkg_file=$src/scripts/runtime-packages.txt
dockerfile=$src/Dockerfile
build_dir=${AMBIENT_IMAGE_BUILD_DIR:-$PWD/image-build}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
section() { echo "== $*"; }

# The package list, as both readers read it: '#' comments, whitespace-separated.
listed=()
while read -r -a words; do listed+=("${words[@]}"); done < <(sed 's/#.*//' "$pkg_file")
((${#listed[@]} > 0)) || { echo "FAIL: $pkg_file lists no package" >&2; exit 1; }

# ---------------------------------------------------------------------------
section "(a) build stage: scripts/image-build-stage.sh (build dir $build_dir)"
out=$work/out
t0=$SECONDS
AMBIENT_IMAGE_BUILD_DIR=$build_dir AMBIENT_IMAGE_REUSE_BUILD_DIR=$reuse \
  bash "$src/scripts/image-build-stage.sh" "$out"
echo "build stage took $((SECONDS - t0)) s"
agent=$out/ambient-agent
plugin=$out/istio-cni
ctl=$out/ambientctl
for bin in "$agent" "$plugin" "$ctl"; do
  if [[ ! -x $bin ]]; then
    fail "$bin missing or not executable"
    continue
  fi
  # A stripped binary has no symbol table (.dynsym stays for the loader).
  if readelf -S --wide "$bin" | grep -qE '\.symtab|\.debug_'; then
    fail "$bin is not stripped"
  else
    echo "$(basename "$bin"): stripped, $(stat -c %s "$bin") bytes"
  fi
done
[[ -x $plugin ]] && { bash "$src/test/unit/check_plugin_deps.sh" "$plugin" || fail "istio-cni needs more than glibc"; }
# The stripped agent still starts (its libraries resolve).
[[ -x $agent ]] && { "$agent" --help >/dev/null || fail "ambient-agent --help failed"; }
# The debugging CLI ships too, and starts.
[[ -x $ctl ]] && { "$ctl" --help >/dev/null || fail "ambientctl --help failed"; }
[[ -x $agent ]] || exit 1

# ---------------------------------------------------------------------------
section "(b) runtime packages cover what the agent loads and executes"
# Closure of the listed packages over Depends/Pre-Depends, among installed
# packages (an alternative "a | b" contributes whichever is installed).
declare -A deps installed
while IFS=$'\t' read -r name status d; do
  [[ $status == ii* ]] || continue
  installed[$name]=1
  deps[$name]=$d
done < <(dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\t${Depends}, ${Pre-Depends}\n')
declare -A closure
queue=()
for p in "${listed[@]}"; do
  if [[ -z ${installed[$p]:-} ]]; then
    fail "listed package $p is not installed here, cannot check it"
    continue
  fi
  closure[$p]=1
  queue+=("$p")
done
while ((${#queue[@]} > 0)); do
  p=${queue[0]}
  queue=("${queue[@]:1}")
  IFS=',' read -r -a clauses <<<"${deps[$p]}"
  for clause in "${clauses[@]}"; do
    IFS='|' read -r -a alts <<<"$clause"
    for alt in "${alts[@]}"; do
      alt=${alt%%(*}        # version constraint
      alt=${alt//[[:space:]]/}
      alt=${alt%%:*}        # :any / :amd64
      [[ -n $alt && -n ${installed[$alt]:-} ]] || continue
      if [[ -z ${closure[$alt]:-} ]]; then
        closure[$alt]=1
        queue+=("$alt")
      fi
    done
  done
done
echo "${#listed[@]} listed packages, ${#closure[@]} with their dependencies"

# The package owning a file; tries the path, its target, and the other side
# of the merged /usr (dpkg records /lib/... for some files, /usr/lib/... for others).
owner() {
  local f=$1 c r
  r=$(readlink -f "$f")
  for c in "$f" "$r" "/usr$f" "/usr$r" "${f#/usr}" "${r#/usr}"; do
    [[ $c == /* ]] || continue
    local o
    if o=$(dpkg -S "$c" 2>/dev/null | grep -v '^diversion' | head -n1); then
      [[ -n $o ]] && { echo "${o%%:*}" | sed 's/,.*//'; return 0; }
    fi
  done
  return 1
}
check_file() {  # what, path
  local pkg
  if ! pkg=$(owner "$2"); then
    fail "$1 ($2) belongs to no package"
  elif [[ -z ${closure[$pkg]:-} ]]; then
    fail "$1 ($2) comes from $pkg, which scripts/runtime-packages.txt does not bring in"
  else
    printf '  %-28s %s\n' "$1" "$pkg"
  fi
}
ldd_out=$(ldd "$agent")
if grep -q 'not found' <<<"$ldd_out"; then
  fail "ambient-agent has unresolved libraries: $(grep 'not found' <<<"$ldd_out")"
fi
while read -r lib arrow path _; do
  case $lib in linux-vdso.so.*|linux-gate.so.*) continue ;; esac
  if [[ $arrow == "=>" ]]; then
    check_file "$lib" "$path"
  elif [[ $lib == /* ]]; then
    check_file "$(basename "$lib")" "$lib"   # the dynamic loader
  fi
done <<<"$ldd_out"
# Programs the agent runs (node-agent/src/redirect: detect, iptables backends,
# host probe sets).
for prog in {iptables,ip6tables}-{legacy,nft}{,-save,-restore} nft ipset; do
  if path=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$prog"); then
    check_file "$prog" "$path"
  else
    fail "$prog not installed here"
  fi
done
# Test tools never go into the image.
for p in "${listed[@]}"; do
  case $p in
    golang*|kubernetes-client|kubectl|containernetworking-plugins|catch2|*-dev|build-essential|cmake)
      fail "test/build-only package $p in scripts/runtime-packages.txt" ;;
  esac
done

# ---------------------------------------------------------------------------
section "(c) Dockerfile and scripts/install-deps use the one list"
# Instructions of the Dockerfile, continuation lines joined, comments dropped,
# prefixed with the stage number.
instructions=$(awk '
  /^[[:space:]]*#/ { next }
  { line = line $0 }
  /\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, "", line); next }
  line ~ /[^[:space:]]/ {
    if (toupper(line) ~ /^[[:space:]]*FROM[[:space:]]/) stage++
    print stage "\t" line
  }
  { line = "" }' "$dockerfile")
last=$(tail -n1 <<<"$instructions" | cut -f1)
build_stage=$(awk -F'\t' '$1 == 1 { print $2 }' <<<"$instructions")
runtime_stage=$(awk -F'\t' -v s="$last" '$1 == s { print $2 }' <<<"$instructions")
has() {  # stage-text, extended regex, message
  grep -qE "$2" <<<"$1" || fail "Dockerfile: $3"
}
has "$build_stage" '^FROM[[:space:]]+debian:bookworm[[:space:]]+AS[[:space:]]+build' "first stage is not 'FROM debian:bookworm AS build'"
has "$build_stage" '^RUN .*scripts/install-deps --build-only' "build stage does not run scripts/install-deps --build-only"
has "$build_stage" '^RUN .*scripts/image-build-stage\.sh /out( |$)' "build stage does not run scripts/image-build-stage.sh /out"
has "$runtime_stage" '^FROM[[:space:]]+debian:bookworm-slim' "runtime stage is not FROM debian:bookworm-slim"
has "$runtime_stage" '^COPY[[:space:]]+scripts/runtime-packages\.txt[[:space:]]' "runtime stage does not copy scripts/runtime-packages.txt"
has "$runtime_stage" '^COPY[[:space:]]+--from=build[[:space:]]+/out/istio-cni[[:space:]]+/opt/cni/bin/istio-cni$' \
  "runtime stage does not copy the plugin to /opt/cni/bin/istio-cni"
has "$runtime_stage" '^COPY[[:space:]]+--from=build[[:space:]]+/out/ambient-agent[[:space:]]+/usr/local/bin/' \
  "runtime stage does not copy the agent to /usr/local/bin"
has "$runtime_stage" '^COPY[[:space:]]+--from=build[[:space:]]+/out/ambientctl[[:space:]]+/usr/local/bin/' \
  "runtime stage does not copy ambientctl to /usr/local/bin"
has "$runtime_stage" '^USER[[:space:]]+0$' "runtime stage does not say USER 0"
has "$runtime_stage" '^ENTRYPOINT[[:space:]]+\["/usr/local/bin/ambient-agent"\]$' "entrypoint is not the agent"
# The installer copies every regular file in /opt/cni/bin: only the plugin goes there.
if grep -E '^(COPY|ADD)' <<<"$runtime_stage" | grep -v '/opt/cni/bin/istio-cni$' | grep -q '/opt/cni'; then
  fail "Dockerfile: something other than istio-cni is copied to /opt/cni/bin"
fi
# Every apt-get install of the runtime stage takes its packages from the list
# and names none itself.
installs=$(grep -E 'apt-get[[:space:]]+install' <<<"$runtime_stage" || true)
[[ -n $installs ]] || fail "Dockerfile: runtime stage installs no packages"
while IFS= read -r run; do
  [[ -n $run ]] || continue
  grep -q 'runtime-packages\.txt' <<<"$run" || fail "Dockerfile: apt-get install not fed from runtime-packages.txt: $run"
  grep -q -- '--no-install-recommends' <<<"$run" || fail "Dockerfile: apt-get install without --no-install-recommends"
  # Words after "install" up to the end of that command must all be options.
  args=$(sed -E 's/.*apt-get[[:space:]]+install//; s/(&&|;|\|).*//' <<<"$run")
  for a in $args; do
    [[ $a == -* ]] || fail "Dockerfile: runtime stage names package '$a' outside runtime-packages.txt"
  done
done <<<"$installs"
echo "Dockerfile: build stage runs the two scripts; runtime stage installs runtime-packages.txt, plugin at /opt/cni/bin/istio-cni"

# scripts/install-deps, run against stub dpkg-query/apt-get that report
# nothing installed and record what would be installed.
stubs=$work/stubs
mkdir -p "$stubs"
printf '#!/bin/sh\nexit 1\n' >"$stubs/dpkg-query"
printf '#!/bin/sh\n[ "$1" = install ] && echo "$@" >>"%s"\nexit 0\n' "$work/apt-args" >"$stubs/apt-get"
chmod +x "$stubs/dpkg-query" "$stubs/apt-get"
would_install() {  # install-deps args...; prints the packages, one a line
  rm -f "$work/apt-args"
  local log
  log=$(PATH=$stubs:$PATH bash "$src/scripts/install-deps" "$@" 2>&1 || true)
  if [[ -s $work/apt-args ]]; then
    tr ' ' '\n' <"$work/apt-args" | grep -v -e '^-' -e '^install$' -e '^$'
  else  # not root: the script names the missing packages and stops
    sed -nE 's/.*missing packages \((.*)\) and not root.*/\1/p' <<<"$log" | tr ' ' '\n' | grep -v '^$'
  fi
}
full=$(would_install)
build_only=$(would_install --build-only)
[[ -n $full ]] || fail "could not see what scripts/install-deps installs"
for p in "${listed[@]}"; do
  grep -qxF "$p" <<<"$full" || fail "scripts/install-deps does not install $p (in runtime-packages.txt)"
done
for p in golang-go containernetworking-plugins kubernetes-client containerd runc busybox-static; do
  if grep -qxF "$p" <<<"$build_only"; then fail "install-deps --build-only installs test tool $p"; fi
done
grep -qxF cmake <<<"$build_only" || fail "install-deps --build-only does not install cmake"
echo "install-deps: installs all ${#listed[@]} listed packages; --build-only: $(wc -l <<<"$build_only") build packages"

if ((failures > 0)); then
  echo "image-pieces: $failures failure(s)" >&2
  exit 1
fi
echo "image-pieces: ok"
