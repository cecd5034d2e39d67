#!/usr/bin/env bash
# Drives a fake-apiserver with the real kubectl, to prove the fake speaks
# the protocol well enough for it: discovery, create (typed-client protobuf
# and JSON), label/annotate merge patches, list/watch with resourceVersion,
# bookmarks, 410 after compaction, the /status subresource, field
# selectors, apply, delete.
#
# Usage: kubectl_smoke.sh KUBECONFIG
#          checks a fake-apiserver that is already running
#        kubectl_smoke.sh --server FAKE_APISERVER_BINARY
#          starts a private one (temp dir, random port, a token), runs the
#          same checks, then restarts it from its --state file and checks
#          that objects and the revision survive and that an old
#          resourceVersion now gets 410; stops it on exit
#
# Needs only kubectl and coreutils/grep/sed: raw requests go through
# `kubectl get --raw` / `kubectl create --raw`, so curl and jq are not
# required. Works in a namespace of its own, so it can run repeatedly
# against one server, but it compacts the server's event log (/fake/compact),
# so do not share that server with a test that resumes watches.
# Exits non-zero on the first failed check.
set -euo pipefail

usage() {
  echo "usage: $0 KUBECONFIG | --server FAKE_APISERVER_BINARY" >&2
  exit 2
}

server_bin=""
if (($# == 2)) && [[ "$1" == "--server" ]]; then
  server_bin="$2"
  [[ -x "$server_bin" ]] || { echo "kubectl_smoke: $server_bin is not executable" >&2; exit 2; }
elif (($# == 1)) && [[ "$1" != -* ]]; then
  export KUBECONFIG="$1"
  [[ -r "$KUBECONFIG" ]] || { echo "kubectl_smoke: cannot read kubeconfig $KUBECONFIG" >&2; exit 2; }
else
  usage
fi

ns="smoke-$$-$RANDOM"
node="smoke-node-$RANDOM"
work="$(mktemp -d)"
watch_pid=""
server_pid=""
# kubectl's discovery cache is keyed by host:port; a private one keeps a
# reused port from serving stale discovery and keeps $HOME clean.
export KUBECACHEDIR="$work/kube-cache"
checks=0

cleanup() {
  # The background watch runs under `timeout`, so it dies on its own even
  # if this trap never runs (SIGKILL); killing timeout's pid forwards the
  # signal to kubectl.
  if [[ -n "$watch_pid" ]]; then
    kill "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
  fi
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  elif [[ -n "${KUBECONFIG:-}" ]]; then
    timeout 20 kubectl delete namespace "$ns" --ignore-not-found >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "kubectl_smoke: FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

# Every kubectl call is bounded: a fake that stops answering fails the
# script instead of hanging ctest.
k() { timeout 30 kubectl "$@"; }

fail() {
  echo "kubectl_smoke: FAIL: $*" >&2
  exit 1
}
ok() {
  checks=$((checks + 1))
  echo "ok $checks - $*"
}

# expect_contains HAYSTACK NEEDLE WHAT
expect_contains() {
  [[ "$1" == *"$2"* ]] || fail "$3: expected to find '$2' in: $1"
}
expect_not_contains() {
  [[ "$1" != *"$2"* ]] || fail "$3: did not expect '$2' in: $1"
}

# start_server: (re)start the private server; it rewrites the kubeconfig
# (same CA, new port) and the ready file once it listens.
start_server() {
  rm -f "$work/ready.json"
  "$server_bin" --tls-dir "$work/tls" --state "$work/state.json" \
    --ready-file "$work/ready.json" --kubeconfig-out "$work/kubeconfig" \
    --token "smoke-$RANDOM$RANDOM" >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    [[ -s "$work/ready.json" ]] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server exited: $(cat "$work/server.err")"
    sleep 0.1
  done
  [[ -s "$work/ready.json" ]] || fail "server not ready after 10s: $(cat "$work/server.err")"
  export KUBECONFIG="$work/kubeconfig"
}

stop_server() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# The list's own resourceVersion: the server emits keys sorted, so the
# list metadata comes after every item and its RV is the last one.
list_rv() {
  k get --raw "$1" | grep -o '"resourceVersion":"[0-9]*"' | tail -n 1 | grep -o '[0-9][0-9]*'
}

if [[ -n "$server_bin" ]]; then
  start_server
  ok "private server started ($(sed -n 's/.*"https":"\([^"]*\)".*/\1/p' "$work/ready.json"))"
fi

# --- discovery and version
out="$(k version -o json)"
expect_contains "$out" '"serverVersion"' "kubectl version"
ok "kubectl version reaches /version"

out="$(k api-resources --no-headers)"
for r in pods namespaces nodes daemonsets; do
  expect_contains "$out" "$r" "api-resources"
done
ok "kubectl api-resources lists pods, namespaces, nodes, daemonsets"

out="$(k get namespaces -o name)"
expect_contains "$out" "namespace/default" "get namespaces"
ok "kubectl get namespaces"

# --- create namespace (typed client: protobuf body)
out="$(k create namespace "$ns")"
expect_contains "$out" "namespace/$ns created" "create namespace"
out="$(k get namespaces)"
expect_contains "$out" "$ns" "get namespaces after create"
ok "kubectl create namespace $ns"

# --- create a pod with a raw JSON POST
cat >"$work/pod.json" <<EOF
{"apiVersion":"v1","kind":"Pod",
 "metadata":{"name":"smoke","labels":{"app":"smoke"},"annotations":{"a":"1","b":"2"}},
 "spec":{"nodeName":"$node","containers":[{"name":"c","image":"busybox"}]},
 "status":{"phase":"Running","podIP":"10.44.0.5"}}
EOF
k create --raw "/api/v1/namespaces/$ns/pods" -f "$work/pod.json" >/dev/null
out="$(k get pod smoke -n "$ns" -o jsonpath='{.status.podIP} {.spec.nodeName}')"
[[ "$out" == "10.44.0.5 $node" ]] || fail "raw POST pod: got '$out'"
ok "raw JSON POST creates a pod"

out="$(k get pods -A)"
expect_contains "$out" "$ns" "get pods -A"
expect_contains "$out" "smoke" "get pods -A"
ok "kubectl get pods -A"

# --- label / annotate (merge patches)
out="$(k label namespace "$ns" istio.io/dataplane-mode=ambient)"
expect_contains "$out" "labeled" "label namespace"
out="$(k get namespace "$ns" -o jsonpath='{.metadata.labels.istio\.io/dataplane-mode}')"
[[ "$out" == "ambient" ]] || fail "label namespace: got '$out'"
out="$(k get namespaces -l istio.io/dataplane-mode=ambient -o name)"
expect_contains "$out" "namespace/$ns" "label selector"
out="$(k get namespaces -l 'istio.io/dataplane-mode notin (ambient)' -o name)"
expect_not_contains "$out" "namespace/$ns" "notin label selector"
ok "kubectl label namespace + label selectors"

k annotate pod smoke -n "$ns" note=hello >/dev/null
out="$(k get pod smoke -n "$ns" -o jsonpath='{.metadata.annotations.note}')"
[[ "$out" == "hello" ]] || fail "annotate: got '$out'"
k annotate pod smoke -n "$ns" note- >/dev/null
out="$(k get pod smoke -n "$ns" -o jsonpath='{.metadata.annotations}')"
expect_not_contains "$out" "note" "annotate removal"
ok "kubectl annotate pod (set and remove)"

# --- kubectl get -w sees a change
timeout 60 kubectl get pods -n "$ns" -w \
  -o jsonpath='{.metadata.name}:{.metadata.labels.step}{"\n"}' >"$work/watch.out" 2>&1 &
watch_pid=$!
# /fake/state lists open watches: change the pod only once kubectl's
# watch is registered, or the event could land before it.
watching=""
for _ in $(seq 100); do
  state="$(k get --raw /fake/state)"
  if [[ "$state" == *"\"path\":\"/api/v1/namespaces/$ns/pods\""* ]]; then
    watching=1
    break
  fi
  sleep 0.1
done
[[ -n "$watching" ]] || fail "kubectl get -w never opened a watch: $(cat "$work/watch.out")"
k label pod smoke -n "$ns" step=watched >/dev/null
for _ in $(seq 100); do
  grep -q '^smoke:watched$' "$work/watch.out" && break
  sleep 0.1
done
grep -q '^smoke:watched$' "$work/watch.out" || fail "kubectl get -w did not show the change: $(cat "$work/watch.out")"
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
watch_pid=""
ok "kubectl get pods -w shows a MODIFIED pod"

# --- list/watch with resourceVersion: replay from the log
rv="$(list_rv "/api/v1/namespaces/$ns/pods")"
[[ -n "$rv" ]] || fail "no resourceVersion on the pod list"
k label pod smoke -n "$ns" --overwrite step=replay >/dev/null
out="$(k get --raw "/api/v1/namespaces/$ns/pods?watch=true&resourceVersion=$rv&timeoutSeconds=1")"
expect_contains "$out" '"type":"MODIFIED"' "watch replay"
expect_contains "$out" '"step":"replay"' "watch replay"
ok "watch from resourceVersion $rv replays the later change"

# --- bookmarks
out="$(k get --raw "/api/v1/namespaces/$ns/pods?watch=true&resourceVersion=$rv&allowWatchBookmarks=true&timeoutSeconds=2")"
expect_contains "$out" '"type":"BOOKMARK"' "bookmarks"
ok "allowWatchBookmarks=true yields BOOKMARK events"

# --- field selectors
other='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"elsewhere"},"spec":{"nodeName":"other-node","containers":[{"name":"c","image":"busybox"}]}}'
echo "$other" | k create --raw "/api/v1/namespaces/$ns/pods" -f - >/dev/null
out="$(k get pods -A --field-selector "spec.nodeName=$node" -o name)"
[[ "$out" == "pod/smoke" ]] || fail "field selector spec.nodeName=$node: got '$out'"
out="$(k get pods -n "$ns" --field-selector "spec.nodeName!=$node" -o name)"
[[ "$out" == "pod/elsewhere" ]] || fail "field selector spec.nodeName!=$node: got '$out'"
out="$(k get --raw "/api/v1/pods?fieldSelector=spec.nodeName%3D$node,metadata.namespace%3D$ns")"
expect_contains "$out" '"name":"smoke"' "raw field selector"
expect_not_contains "$out" '"name":"elsewhere"' "raw field selector"
ok "field selectors spec.nodeName (=, !=) and metadata.namespace"

# --- pods/status merge patch: null deletes, spec is ignored
k patch pod smoke -n "$ns" --subresource=status --type merge \
  -p '{"metadata":{"annotations":{"a":null}},"spec":{"nodeName":"ignored"},"status":{"podIP":"10.44.0.9"}}' >/dev/null
out="$(k get pod smoke -n "$ns" -o jsonpath='{.metadata.annotations.a}|{.metadata.annotations.b}|{.status.podIP}|{.spec.nodeName}')"
[[ "$out" == "|2|10.44.0.9|$node" ]] || fail "status merge patch: got '$out'"
out="$(k get --raw "/fake/requests?method=PATCH&path=/api/v1/namespaces/$ns/pods/smoke/status")"
expect_contains "$out" '"contentType":"application/merge-patch+json"' "request log"
expect_contains "$out" '\"a\":null' "request log body"
ok "merge patch on pods/status (null deletes an annotation; spec untouched; body logged)"

# --- 410 Expired after compaction; a list at an old RV still works
k create --raw /fake/compact -f /dev/null >/dev/null
out="$(k get --raw "/api/v1/namespaces/$ns/pods?watch=true&resourceVersion=$rv&timeoutSeconds=1")"
expect_contains "$out" '"type":"ERROR"' "watch after compact"
expect_contains "$out" '"code":410' "watch after compact"
expect_contains "$out" '"reason":"Expired"' "watch after compact"
out="$(k get --raw "/api/v1/namespaces/$ns/pods?resourceVersion=$rv")"
expect_contains "$out" '"kind":"PodList"' "list at a compacted RV"
ok "watch from a compacted resourceVersion gets ERROR 410 Expired"

# --- create -f, apply (create then strategic-merge patch), json patch
cat >"$work/applied.json" <<EOF
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"applied","namespace":"$ns","labels":{"rev":"one"}},
 "spec":{"containers":[{"name":"c","image":"busybox"}]}}
EOF
out="$(k apply -f "$work/applied.json")"
expect_contains "$out" "pod/applied created" "apply (create)"
sed -i 's/"rev":"one"/"rev":"two"/' "$work/applied.json"
out="$(k apply -f "$work/applied.json")"
expect_contains "$out" "pod/applied configured" "apply (patch)"
out="$(k get pod applied -n "$ns" -o jsonpath='{.metadata.labels.rev}')"
[[ "$out" == "two" ]] || fail "apply: got '$out'"
k patch pod applied -n "$ns" --type json -p '[{"op":"add","path":"/metadata/labels/jp","value":"yes"}]' >/dev/null
out="$(k get pod applied -n "$ns" -o jsonpath='{.metadata.labels.jp}')"
[[ "$out" == "yes" ]] || fail "json patch: got '$out'"
sed 's/"applied"/"created"/' "$work/applied.json" >"$work/created.json"
out="$(k create -f "$work/created.json")"
expect_contains "$out" "pod/created created" "create -f"
ok "kubectl apply (create + configure), create -f, patch --type json"

# --- errors come back as Status objects kubectl understands
if out="$(k get pod does-not-exist -n "$ns" 2>&1)"; then
  fail "get of a missing pod succeeded"
fi
expect_contains "$out" 'pods "does-not-exist" not found' "NotFound"
if out="$(k create namespace "$ns" 2>&1)"; then
  fail "duplicate create succeeded"
fi
expect_contains "$out" "AlreadyExists" "AlreadyExists"
ok "NotFound and AlreadyExists surface as kubectl errors"

# --- delete
out="$(k delete pod smoke -n "$ns")"
expect_contains "$out" 'pod "smoke" deleted' "delete pod"
out="$(k get pods -n "$ns" -o name)"
expect_not_contains "$out" "pod/smoke" "after delete"
out="$(k delete namespace "$ns")"
expect_contains "$out" "deleted" "delete namespace"
out="$(k get pods -A -o name --field-selector "metadata.namespace=$ns")"
[[ -z "$out" ]] || fail "pods left after namespace deletion: $out"
ok "kubectl delete pod / namespace (contents go with it)"

# --- restart from the state file (private server only)
if [[ -n "$server_bin" ]]; then
  k create namespace "$ns-persist" >/dev/null
  k label namespace "$ns-persist" kept=yes >/dev/null
  rv="$(list_rv /api/v1/namespaces)"
  stop_server
  start_server
  out="$(k get namespace "$ns-persist" -o jsonpath='{.metadata.labels.kept}')"
  [[ "$out" == "yes" ]] || fail "namespace lost across restart: '$out'"
  rv2="$(list_rv /api/v1/namespaces)"
  [[ "$rv2" == "$rv" ]] || fail "revision changed across restart: $rv -> $rv2"
  out="$(k get --raw "/api/v1/namespaces?watch=true&resourceVersion=$((rv - 1))&timeoutSeconds=1")"
  expect_contains "$out" '"code":410' "watch from before the restart"
  k label namespace "$ns-persist" after=restart >/dev/null
  rv3="$(list_rv /api/v1/namespaces)"
  ((rv3 > rv)) || fail "revision did not advance after restart: $rv -> $rv3"
  ok "restart from --state keeps objects and revision; older RVs get 410"
fi

echo "kubectl_smoke: $checks passed, 0 failed"
