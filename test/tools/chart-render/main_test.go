package main

// The Helm semantics chart-render claims, one by one, so a chart test that
// passes here means the same as with `helm template`.

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestToYamlIsSigsYamlWithoutTrailingNewline(t *testing.T) {
	v := map[string]interface{}{
		"b": []interface{}{"x", map[string]interface{}{"k": 1.0}},
		"a": "true",
		"c": 30.0,
	}
	want := "a: \"true\"\nb:\n- x\n- k: 1\nc: 30"
	if got := toYAML(v); got != want {
		t.Errorf("toYaml = %q, want %q", got, want)
	}
	if got := toYAML(nil); got != "null" {
		t.Errorf("toYaml nil = %q, want null", got)
	}
}

func TestRequiredFailsOnNilAndEmptyString(t *testing.T) {
	for _, v := range []interface{}{nil, ""} {
		if _, err := required("need it", v); err == nil || err.Error() != "need it" {
			t.Errorf("required(%#v) error = %v, want \"need it\"", v, err)
		}
	}
	for _, v := range []interface{}{"x", false, 0.0} {
		if _, err := required("need it", v); err != nil {
			t.Errorf("required(%#v) = %v, want no error", v, err)
		}
	}
}

func TestSetUsesHelmTypingAndPaths(t *testing.T) {
	got := map[string]interface{}{}
	for _, s := range []string{
		"a.b=true,a.c=12,a.d=012,a.e=null,a.f=",
		`g={x,y},h[1].i=z,j\.k=v\,w`,
	} {
		if err := parseSet(s, got, false); err != nil {
			t.Fatalf("parseSet(%q): %v", s, err)
		}
	}
	want := map[string]interface{}{
		"a":   map[string]interface{}{"b": true, "c": int64(12), "d": "012", "e": nil, "f": ""},
		"g":   []interface{}{"x", "y"},
		"h":   []interface{}{nil, map[string]interface{}{"i": "z"}},
		"j.k": "v,w",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseSet = %#v\nwant %#v", got, want)
	}
	str := map[string]interface{}{}
	if err := parseSet("a=true,b=1", str, true); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(str, map[string]interface{}{"a": "true", "b": "1"}) {
		t.Errorf("--set-string gave %#v", str)
	}
	for _, bad := range []string{"a", "a.=1", "a[x]=1", "a={x"} {
		if err := parseSet(bad, map[string]interface{}{}, false); err == nil {
			t.Errorf("parseSet(%q) succeeded, want an error", bad)
		}
	}
}

func TestCoalesceMergesMapsAndNullDeletes(t *testing.T) {
	defaults := map[string]interface{}{
		"m":    map[string]interface{}{"keep": 1.0, "drop": 2.0, "over": 3.0},
		"list": []interface{}{"a"},
	}
	user := map[string]interface{}{
		"m":    map[string]interface{}{"drop": nil, "over": 4.0},
		"list": []interface{}{"b"},
	}
	want := map[string]interface{}{
		"m":    map[string]interface{}{"keep": 1.0, "over": 4.0},
		"list": []interface{}{"b"},
	}
	if got := coalesce(user, defaults); !reflect.DeepEqual(got, want) {
		t.Errorf("coalesce = %#v, want %#v", got, want)
	}
}

// A chart in a temp dir exercising include, tpl, required, the skipped
// partial, NOTES and missing keys.
func TestRenderLikeHelmTemplate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Chart.yaml", "apiVersion: v2\nname: c\nversion: 1.2.3\n")
	write("values.yaml", "name: x\nport: 8080\nmsg: \"{{ .Release.Namespace }}-{{ .Values.name }}\"\n")
	write("templates/_h.tpl", `{{ define "c.name" }}{{ .Values.name }}-{{ .Release.Name }}{{ end }}`)
	write("templates/cm.yaml", `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "c.name" . }}
data:
  port: {{ .Values.port | quote }}
  msg: {{ tpl .Values.msg . | quote }}
  missing: "{{ .Values.nothere }}"
  need: {{ required "need is required" .Values.need | quote }}
  tmpl: {{ .Template.Name }}
  chart: {{ .Chart.Name }}-{{ .Chart.Version }}
  kube: {{ .Capabilities.KubeVersion.Minor }}
`)
	write("templates/empty.yaml", "{{- if false }}x{{ end }}\n")
	write("templates/NOTES.txt", "release {{ .Release.Name }}\n")

	opts := renderOptions{chartDir: dir, releaseName: "r", namespace: "ns", kubeVersion: "v1.29.1"}
	if _, err := render(opts); err == nil || !strings.Contains(err.Error(), "need is required") {
		t.Fatalf("render without need: %v, want the required message", err)
	}
	opts.sets = []string{"need=yes"}
	res, err := render(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.manifests) != 1 || res.manifests[0].name != "c/templates/cm.yaml" {
		t.Fatalf("manifests = %+v, want only c/templates/cm.yaml", res.manifests)
	}
	want := `apiVersion: v1
kind: ConfigMap
metadata:
  name: x-r
data:
  port: "8080"
  msg: "ns-x"
  missing: ""
  need: "yes"
  tmpl: c/templates/cm.yaml
  chart: c-1.2.3
  kube: 29`
	if res.manifests[0].content != want {
		t.Errorf("content:\n%s\nwant:\n%s", res.manifests[0].content, want)
	}
	if res.notes != "release r" {
		t.Errorf("notes = %q", res.notes)
	}
}

func TestFunctionsHelmLacksAreNotDefined(t *testing.T) {
	f := newEngine().funcs()
	for _, name := range []string{"env", "expandenv"} {
		if _, ok := f[name]; ok {
			t.Errorf("%s is defined; Helm removes it", name)
		}
	}
	for _, name := range []string{"include", "tpl", "toYaml", "required", "fail", "merge", "quote"} {
		if _, ok := f[name]; !ok {
			t.Errorf("%s is missing", name)
		}
	}
}
