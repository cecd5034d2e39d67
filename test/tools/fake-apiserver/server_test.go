package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLabelSelector(t *testing.T) {
	obj := map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web", "tier": "fe"}}}
	cases := map[string]bool{
		"":                         true,
		"app=web":                  true,
		"app==web":                 true,
		"app!=web":                 false,
		"app!=db":                  true,
		"missing!=x":               true,
		"app in (db, web)":         true,
		"app notin (db,web)":       false,
		"missing notin (x)":        true,
		"tier":                     true,
		"!tier":                    false,
		"!missing,app=web":         true,
		"app in (web),tier in (x)": false,
	}
	for sel, want := range cases {
		s, err := parseLabelSelector(sel)
		if err != nil {
			t.Fatalf("%q: %v", sel, err)
		}
		if got := s.matches(obj); got != want {
			t.Errorf("%q: got %v, want %v", sel, got, want)
		}
	}
	for _, bad := range []string{"=x", "app in web", "app in (a", "a b"} {
		if _, err := parseLabelSelector(bad); err == nil {
			t.Errorf("%q: expected a parse error", bad)
		}
	}
}

func TestFieldSelector(t *testing.T) {
	pods := resourceByName("pods")
	obj := map[string]any{"metadata": map[string]any{"name": "p", "namespace": "ns"},
		"spec": map[string]any{"nodeName": "n1", "hostNetwork": true}}
	cases := map[string]bool{
		"spec.nodeName=n1":                         true,
		"spec.nodeName==n1,metadata.namespace=ns":  true,
		"spec.nodeName!=n1":                        false,
		"spec.hostNetwork=true":                    true,
		"status.podIP=":                            true,
		"metadata.name=p,metadata.namespace!=ns":   false,
		"metadata.name=p,metadata.namespace!=kube": true,
	}
	for sel, want := range cases {
		s, err := parseFieldSelector(sel, pods)
		if err != nil {
			t.Fatalf("%q: %v", sel, err)
		}
		if got := s.matches(obj); got != want {
			t.Errorf("%q: got %v, want %v", sel, got, want)
		}
	}
	if _, err := parseFieldSelector("spec.bogus=1", pods); err == nil {
		t.Error("unsupported field label accepted")
	}
	if _, err := parseFieldSelector("metadata.namespace=x", resourceByName("nodes")); err == nil {
		t.Error("metadata.namespace accepted on a cluster-scoped kind")
	}
}

func mustJSON(t *testing.T, s string) any {
	t.Helper()
	v, err := decodeJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPatches(t *testing.T) {
	doc := mustJSON(t, `{"a":{"b":1,"c":[1,2]},"d":"x"}`)
	got, _ := json.Marshal(mergePatch(doc, mustJSON(t, `{"a":{"b":null,"e":2},"d":"y"}`)))
	if string(got) != `{"a":{"c":[1,2],"e":2},"d":"y"}` {
		t.Errorf("merge patch: %s", got)
	}
	if orig, _ := json.Marshal(doc); string(orig) != `{"a":{"b":1,"c":[1,2]},"d":"x"}` {
		t.Errorf("merge patch mutated its target: %s", orig)
	}
	out, err := jsonPatch(doc, mustJSON(t, `[
		{"op":"test","path":"/a/b","value":1.0},
		{"op":"add","path":"/a/c/-","value":3},
		{"op":"add","path":"/a/c/0","value":0},
		{"op":"remove","path":"/d"},
		{"op":"replace","path":"/a/b","value":"z"},
		{"op":"add","path":"/x~1y","value":true}]`))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(out); string(got) != `{"a":{"b":"z","c":[0,1,2,3]},"x/y":true}` {
		t.Errorf("json patch: %s", got)
	}
	if _, err := jsonPatch(doc, mustJSON(t, `[{"op":"test","path":"/d","value":"nope"}]`)); err == nil {
		t.Error("failed test op did not fail the patch")
	}
	if _, err := jsonPatch(doc, mustJSON(t, `[{"op":"remove","path":"/missing"}]`)); err == nil {
		t.Error("remove of a missing path succeeded")
	}
}

type harness struct {
	t   *testing.T
	url string
}

func newHarness(t *testing.T, stateFile string) (*harness, *store) {
	st, err := newStore(stateFile, 1000)
	if err != nil {
		t.Fatal(err)
	}
	st.seedNamespaces([]string{"default"})
	srv := &server{store: st, bookmarkInterval: 100 * time.Millisecond, kubeVersion: "v1.32.4",
		reqlog: &requestLog{max: 100}, faults: &faults{}}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &harness{t, ts.URL}, st
}

func (h *harness) do(method, path, contentType, body string) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func (h *harness) watch(path string) []map[string]any {
	h.t.Helper()
	resp, err := http.Get(h.url + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			h.t.Fatalf("bad event %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

func eventSummary(evs []map[string]any) string {
	var parts []string
	for _, ev := range evs {
		obj, _ := ev["object"].(map[string]any)
		md, _ := obj["metadata"].(map[string]any)
		name, _ := md["name"].(string)
		parts = append(parts, ev["type"].(string)+":"+name)
	}
	return strings.Join(parts, " ")
}

func TestWatchResumeSelectorsAndExpiry(t *testing.T) {
	h, _ := newHarness(t, "")
	code, _ := h.do("POST", "/api/v1/namespaces/default/pods", "application/json",
		`{"metadata":{"name":"p1","labels":{"sel":"yes"}},"spec":{"nodeName":"n1"}}`)
	if code != 201 {
		t.Fatalf("create: %d", code)
	}
	_, list := h.do("GET", "/api/v1/namespaces/default/pods", "", "")
	rv := list["metadata"].(map[string]any)["resourceVersion"].(string)
	if items := list["items"].([]any); len(items) != 1 || items[0].(map[string]any)["kind"] != nil {
		t.Fatalf("list items: %v", items)
	}

	mp := "application/merge-patch+json"
	h.do("PATCH", "/api/v1/namespaces/default/pods/p1", mp, `{"metadata":{"labels":{"sel":"no"}}}`)
	h.do("PATCH", "/api/v1/namespaces/default/pods/p1", mp, `{"metadata":{"labels":{"sel":"yes"}}}`)
	h.do("POST", "/api/v1/namespaces/default/pods", "application/json", `{"metadata":{"name":"p2"},"spec":{"nodeName":"n2"}}`)
	h.do("DELETE", "/api/v1/namespaces/default/pods/p1", "", "")

	all := h.watch("/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1&resourceVersion=" + rv)
	if got := eventSummary(all); got != "MODIFIED:p1 MODIFIED:p1 ADDED:p2 DELETED:p1" {
		t.Errorf("replay: %s", got)
	}
	sel := h.watch("/api/v1/pods?watch=1&timeoutSeconds=1&labelSelector=sel%3Dyes&resourceVersion=" + rv)
	if got := eventSummary(sel); got != "DELETED:p1 ADDED:p1 DELETED:p1" {
		t.Errorf("label-selected replay: %s", got)
	}
	fs := h.watch("/api/v1/pods?watch=true&timeoutSeconds=1&fieldSelector=spec.nodeName%3Dn2&resourceVersion=" + rv)
	if got := eventSummary(fs); got != "ADDED:p2" {
		t.Errorf("field-selected replay: %s", got)
	}
	bm := h.watch("/api/v1/pods?watch=true&timeoutSeconds=1&allowWatchBookmarks=true&resourceVersion=0")
	if got := eventSummary(bm); !strings.HasPrefix(got, "ADDED:p2 BOOKMARK:") {
		t.Errorf("watch from 0 with bookmarks: %s", got)
	}

	h.do("POST", "/fake/compact", "", "")
	exp := h.watch("/api/v1/pods?watch=true&resourceVersion=" + rv)
	if len(exp) != 1 || exp[0]["type"] != "ERROR" {
		t.Fatalf("after compact: %v", exp)
	}
	if st := exp[0]["object"].(map[string]any); st["code"].(float64) != 410 || st["reason"] != "Expired" {
		t.Errorf("after compact: %v", st)
	}
	if code, _ := h.do("GET", "/api/v1/pods?resourceVersion="+rv, "", ""); code != 200 {
		t.Errorf("list at compacted RV: %d", code)
	}
}

func TestWritesAndErrors(t *testing.T) {
	h, _ := newHarness(t, "")
	js, mp := "application/json", "application/merge-patch+json"
	if code, st := h.do("POST", "/api/v1/namespaces/nope/pods", js, `{"metadata":{"name":"x"}}`); code != 404 || st["reason"] != "NotFound" {
		t.Errorf("create in missing namespace: %d %v", code, st)
	}
	if code, _ := h.do("POST", "/api/v1/namespaces/default/pods", "application/x-www-form-urlencoded", `{}`); code != 415 {
		t.Errorf("form body: %d", code)
	}
	if code, _ := h.do("POST", "/api/v1/namespaces/default/pods", js, `{"metadata":`); code != 400 {
		t.Errorf("bad JSON: %d", code)
	}
	if code, _ := h.do("POST", "/api/v1/namespaces/default/pods", js, `{"metadata":{"name":"Bad"}}`); code != 422 {
		t.Errorf("bad name: %d", code)
	}
	code, pod := h.do("POST", "/api/v1/namespaces/default/pods", js,
		`{"metadata":{"name":"p","annotations":{"a":"1","b":"2"}},"spec":{"nodeName":"n"},"status":{"podIP":"10.0.0.1"}}`)
	if code != 201 {
		t.Fatalf("create: %d", code)
	}
	if code, st := h.do("POST", "/api/v1/namespaces/default/pods", js, `{"metadata":{"name":"p"}}`); code != 409 || st["reason"] != "AlreadyExists" {
		t.Errorf("duplicate: %d %v", code, st)
	}
	stale := pod["metadata"].(map[string]any)["resourceVersion"].(string)
	h.do("PATCH", "/api/v1/namespaces/default/pods/p", mp, `{"metadata":{"labels":{"x":"1"}}}`)
	if code, st := h.do("PUT", "/api/v1/namespaces/default/pods/p", js,
		`{"metadata":{"name":"p","resourceVersion":"`+stale+`"}}`); code != 409 || st["reason"] != "Conflict" {
		t.Errorf("stale PUT: %d %v", code, st)
	}
	// A no-op patch must not bump the revision.
	_, before := h.do("GET", "/api/v1/namespaces/default/pods/p", "", "")
	_, after := h.do("PATCH", "/api/v1/namespaces/default/pods/p", mp, `{"metadata":{"labels":{"x":"1"}}}`)
	if before["metadata"].(map[string]any)["resourceVersion"] != after["metadata"].(map[string]any)["resourceVersion"] {
		t.Error("no-op patch bumped resourceVersion")
	}
	// /status takes status and metadata, not spec; the object ignores status.
	_, got := h.do("PATCH", "/api/v1/namespaces/default/pods/p/status", mp,
		`{"metadata":{"annotations":{"a":null}},"spec":{"nodeName":"other"},"status":{"podIP":"10.0.0.2"}}`)
	md := got["metadata"].(map[string]any)
	if _, has := md["annotations"].(map[string]any)["a"]; has || got["spec"].(map[string]any)["nodeName"] != "n" ||
		got["status"].(map[string]any)["podIP"] != "10.0.0.2" {
		t.Errorf("status patch: %v", got)
	}
	_, got = h.do("PATCH", "/api/v1/namespaces/default/pods/p", mp, `{"status":{"podIP":"1.1.1.1"}}`)
	if got["status"].(map[string]any)["podIP"] != "10.0.0.2" {
		t.Errorf("main-resource patch changed status: %v", got["status"])
	}
	if code, _ := h.do("PATCH", "/api/v1/namespaces/default/pods/p", "application/apply-patch+yaml", `x: 1`); code != 415 {
		t.Errorf("apply patch: %d", code)
	}
	if code, _ := h.do("POST", "/api/v1/namespaces/default/pods/p", js, `{}`); code != 405 {
		t.Errorf("POST on an object: %d", code)
	}
	h.do("POST", "/fake/fail?path=/api/v1/namespaces/default/pods&code=503&count=1", "", "")
	if code, st := h.do("GET", "/api/v1/namespaces/default/pods", "", ""); code != 503 || st["reason"] != "ServiceUnavailable" {
		t.Errorf("injected failure: %d %v", code, st)
	}
	if code, _ := h.do("GET", "/api/v1/namespaces/default/pods", "", ""); code != 200 {
		t.Errorf("after the injected failure: %d", code)
	}
	if code, _ := h.do("DELETE", "/api/v1/namespaces/default/pods/p", "", ""); code != 200 {
		t.Errorf("delete: %d", code)
	}
	if code, _ := h.do("GET", "/api/v1/namespaces/default/pods/p", "", ""); code != 404 {
		t.Errorf("get after delete: %d", code)
	}
}

func TestStatePersistsAcrossRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	h, st := newHarness(t, file)
	h.do("POST", "/api/v1/namespaces", "application/json", `{"metadata":{"name":"kept","labels":{"n":"1"}}}`)
	rv, _ := st.currentRV()

	st2, err := newStore(file, 1000)
	if err != nil {
		t.Fatal(err)
	}
	rv2, compacted := st2.currentRV()
	if rv2 != rv || compacted != rv {
		t.Errorf("restart: rv %d -> %d, compacted %d", rv, rv2, compacted)
	}
	o, ok := st2.get(resourceByName("namespaces"), "", "kept")
	if !ok || meta(o)["labels"].(map[string]any)["n"] != "1" {
		t.Errorf("restart lost the namespace: %v", o)
	}
	if ws := st2.startWatch(resourceByName("namespaces"), "", rv-1, "", ""); ws.err == nil || ws.err.code != 410 {
		t.Errorf("watch from before the restart: %+v", ws.err)
	}
}

func TestInjectedDelays(t *testing.T) {
	h, _ := newHarness(t, "")
	js, mp := "application/json", "application/merge-patch+json"
	if code, _ := h.do("POST", "/api/v1/namespaces/default/pods", js, `{"metadata":{"name":"p"},"spec":{"nodeName":"n"}}`); code != 201 {
		t.Fatalf("create: %d", code)
	}
	for _, bad := range []string{"code=0", "code=0&delay=-1", "delay=x", "code=42&delay=10"} {
		if code, _ := h.do("POST", "/fake/fail?path=/api&"+bad, "", ""); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	// code=0: slowed down, then served.
	h.do("POST", "/fake/fail?path=/api/v1/namespaces/default/pods/p/status&method=PATCH&code=0&delay=300", "", "")
	start := time.Now()
	code, got := h.do("PATCH", "/api/v1/namespaces/default/pods/p/status", mp, `{"metadata":{"annotations":{"a":"1"}}}`)
	if took := time.Since(start); code != 200 || took < 300*time.Millisecond {
		t.Errorf("delayed patch: %d after %v", code, took)
	}
	if got["metadata"].(map[string]any)["annotations"].(map[string]any)["a"] != "1" {
		t.Errorf("delayed patch not applied: %v", got)
	}
	// The rule was used up: the next one is immediate.
	start = time.Now()
	if code, _ := h.do("PATCH", "/api/v1/namespaces/default/pods/p/status", mp, `{}`); code != 200 || time.Since(start) > 250*time.Millisecond {
		t.Errorf("after the delay rule: %d after %v", code, time.Since(start))
	}
	// A failure can be delayed too; other methods on the path are untouched.
	h.do("POST", "/fake/fail?path=/api/v1/namespaces/default/pods/p/status&method=PATCH&code=503&delay=100&count=-1", "", "")
	if code, _ := h.do("GET", "/api/v1/namespaces/default/pods/p/status", "", ""); code != 200 {
		t.Errorf("GET on a PATCH-only rule: %d", code)
	}
	start = time.Now()
	for i := 0; i < 2; i++ {
		if code, st := h.do("PATCH", "/api/v1/namespaces/default/pods/p/status", mp, `{}`); code != 503 || st["reason"] != "ServiceUnavailable" {
			t.Errorf("delayed failure %d: %d %v", i, code, st)
		}
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("two delayed failures took %v", took)
	}
	_, rules := h.do("GET", "/fake/fail", "", "")
	if rs := rules["rules"].([]any); len(rs) != 1 || rs[0].(map[string]any)["delayMs"].(float64) != 100 {
		t.Errorf("rules: %v", rules)
	}
}
