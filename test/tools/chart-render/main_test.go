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
		"m":     map[string]interface{}{"keep": 1.0, "drop": 2.0, "over": 3.0, "null": nil},
		"list":  []interface{}{"a"},
		"top":   "x",
		"nulld": nil,
	}
	user := map[string]interface{}{
		"m":    map[string]interface{}{"drop": nil, "over": 4.0, "mine": nil},
		"list": []interface{}{"b"},
		"top":  nil,
		// Keys the chart does not have: Helm keeps the user's null, so a
		// template (and mergeOverwrite) sees it.
		"own": nil,
	}
	want := map[string]interface{}{
		"m":    map[string]interface{}{"keep": 1.0, "over": 4.0, "mine": nil},
		"list": []interface{}{"b"},
		"own":  nil,
	}
	if got := coalesce(user, defaults); !reflect.DeepEqual(got, want) {
		t.Errorf("coalesce = %#v, want %#v", got, want)
	}
}

func TestFromYamlIsHelms(t *testing.T) {
	got := fromYAML("a: 1\nb: [x, {c: true}]\nd: null\n")
	want := map[string]interface{}{
		"a": 1.0, "b": []interface{}{"x", map[string]interface{}{"c": true}}, "d": nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fromYaml = %#v, want %#v", got, want)
	}
	if got := fromYAML("# only a comment\n"); len(got) != 0 {
		t.Errorf("fromYaml of a comment = %#v, want an empty map", got)
	}
	if got := fromYAML("a: [x"); got["Error"] == nil || len(got) != 1 {
		t.Errorf("fromYaml of bad YAML = %#v, want only an Error key", got)
	}
	if got := fromYAML("- x\n"); got["Error"] == nil {
		t.Errorf("fromYaml of a list = %#v, want an Error key", got)
	}
}

// The chart's profile merge relies on mergo's map semantics as Helm has
// them: mergeOverwrite copies false, "", empty lists and nulls over a
// default, merges maps in place and leaves other keys alone.
func TestMergeOverwriteCopiesZeroValues(t *testing.T) {
	e := newEngine()
	tmpl, err := e.root.New("t").Parse(`{{ $_ := mustMergeOverwrite .d .u }}{{ toYaml .d }}`)
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]interface{}{
		"d": map[string]interface{}{
			"b": true, "s": "x", "l": []interface{}{"a"}, "z": "y",
			"m": map[string]interface{}{"keep": 1.0, "over": 2.0},
		},
		"u": map[string]interface{}{
			"b": false, "s": "", "l": []interface{}{}, "z": nil,
			"m": map[string]interface{}{"over": 0.0}, "new": "z",
		},
	}
	var buf strings.Builder
	if err := tmpl.Execute(&buf, data); err != nil {
		t.Fatal(err)
	}
	want := "b: false\nl: []\nm:\n  keep: 1\n  over: 0\nnew: z\ns: \"\"\nz: null"
	if buf.String() != want {
		t.Errorf("merged:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// A chart in a temp dir exercising include, tpl, required, the skipped
// partial, NOTES, missing keys, .Files and fromYaml.
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
	write("files/p.yaml", "k: from-file\n")
	write("templates/files.yaml", `{{- $p := .Files.Get "files/p.yaml" | fromYaml }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: files
data:
  k: {{ $p.k }}
  missing: "{{ .Files.Get "files/none.yaml" }}"
  values: "{{ .Files.Get "values.yaml" | len }}"
  template: "{{ .Files.Get "templates/files.yaml" | len }}"
  lines: "{{ .Files.Lines "files/p.yaml" | len }}"
`)

	opts := renderOptions{chartDir: dir, releaseName: "r", namespace: "ns", kubeVersion: "v1.29.1"}
	if _, err := render(opts); err == nil || !strings.Contains(err.Error(), "need is required") {
		t.Fatalf("render without need: %v, want the required message", err)
	}
	opts.sets = []string{"need=yes"}
	res, err := render(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.manifests) != 2 || res.manifests[0].name != "c/templates/cm.yaml" ||
		res.manifests[1].name != "c/templates/files.yaml" {
		t.Fatalf("manifests = %+v, want c/templates/cm.yaml and files.yaml", res.manifests)
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
	// .Files holds files/ but not values.yaml or templates, as Helm's loader.
	wantFiles := `apiVersion: v1
kind: ConfigMap
metadata:
  name: files
data:
  k: from-file
  missing: ""
  values: "0"
  template: "0"
  lines: "1"`
	if res.manifests[1].content != wantFiles {
		t.Errorf("files content:\n%s\nwant:\n%s", res.manifests[1].content, wantFiles)
	}
	if res.notes != "release r" {
		t.Errorf("notes = %q", res.notes)
	}
}

// A chart may replace .Values from a template (istio's charts merge a
// profile that way): every template rendered after it sees the new values,
// because all share one top-level object, as in Helm.
func TestReplacedValuesReachLaterTemplates(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: c\nversion: 1.0.0\n",
		"values.yaml": "defaults:\n  a: chart\n  b: chart\n",
		"templates/_h.tpl": `{{- define "c.init" }}{{ if hasKey .Values "defaults" }}` +
			`{{ $d := .Values.defaults }}{{ $_ := unset .Values "defaults" }}` +
			`{{ $_ := set . "Values" (mustMergeOverwrite $d .Values) }}{{ end }}{{ end }}`,
		"templates/a.yaml": "{{ include \"c.init\" . }}apiVersion: v1\nkind: A\nv: {{ .Values.a }}-{{ .Values.b }}\n",
		"templates/b.yaml": "{{ include \"c.init\" . }}apiVersion: v1\nkind: B\nv: {{ .Values.a }}-{{ .Values.b }}\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := render(renderOptions{chartDir: dir, releaseName: "r", namespace: "ns",
		kubeVersion: "v1.31.0", sets: []string{"b=user"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.manifests {
		if !strings.HasSuffix(m.content, "v: chart-user") {
			t.Errorf("%s:\n%s\nwant v: chart-user", m.name, m.content)
		}
	}
}

func TestFunctionsHelmLacksAreNotDefined(t *testing.T) {
	f := newEngine().funcs()
	for _, name := range []string{"env", "expandenv"} {
		if _, ok := f[name]; ok {
			t.Errorf("%s is defined; Helm removes it", name)
		}
	}
	for _, name := range []string{"include", "tpl", "toYaml", "fromYaml", "required", "fail", "merge",
		"mustMergeOverwrite", "unset", "quote"} {
		if _, ok := f[name]; !ok {
			t.Errorf("%s is missing", name)
		}
	}
}
