// chart-render: renders a Helm chart the way `helm template` does, for tests
// on a machine without Helm (Debian does not package it).
//
// It is Go's text/template with Debian's sprig (the library Helm itself
// uses) plus the Helm functions our chart needs, with Helm's semantics:
//
//   - include NAME DATA   renders a named template to a string
//   - tpl STRING DATA     renders a string as a template with the chart's templates
//   - toYaml VALUE        sigs.k8s.io/yaml output (JSON, then YAML), no trailing newline
//   - required MSG VALUE  fails rendering with MSG when VALUE is nil or ""
//   - fromYaml STRING     a YAML map, numbers float64 as in Helm; on a parse
//     error a map whose "Error" key holds the message
//   - .Files.Get NAME     a chart file outside templates/ (e.g. files/x.yaml)
//     as a string, "" when there is none; also .Files.GetBytes, .Files.Lines
//
// sprig's env and expandenv are removed because Helm removes them: a
// template that renders here uses only functions Helm has.
//
// The rest follows Helm's engine too: values.yaml, then every --values file,
// then --set / --set-string (Helm's coalescing: maps merge; a user null
// removes the chart's default, and stays a null where the chart has no such
// key); numbers from YAML become float64 as in Helm; missing keys render as
// empty (missingkey=zero, "<no value>" removed); templates render in reverse
// name order with one shared top-level object; templates whose name starts
// with "_" are parsed but not rendered; NOTES.txt is rendered separately;
// every rendered document must parse as YAML with apiVersion and kind, as
// Helm checks before printing. sprig's merge functions are mergo's, as in
// Helm: mergeOverwrite copies false, "" and null over a default.
//
// Output: a multi-document YAML stream on stdout (or --output), each file
// as "---\n# Source: <chart>/templates/<file>\n<content>", sorted by file
// name. NOTES go to stderr, or to --notes FILE.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

// Helm's limit on nested include of one template name.
const includeMaxDepth = 1000

// chartMeta is the part of Chart.yaml templates see as .Chart; field names
// are Helm's (chart.Metadata).
type chartMeta struct {
	APIVersion  string            `yaml:"apiVersion"`
	Name        string            `yaml:"name"`
	Version     string            `yaml:"version"`
	AppVersion  string            `yaml:"appVersion"`
	KubeVersion string            `yaml:"kubeVersion"`
	Description string            `yaml:"description"`
	Type        string            `yaml:"type"`
	Home        string            `yaml:"home"`
	Keywords    []string          `yaml:"keywords"`
	Annotations map[string]string `yaml:"annotations"`
}

// kubeVersion mirrors Helm's chartutil.KubeVersion (.Capabilities.KubeVersion).
type kubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (k kubeVersion) String() string     { return k.Version }
func (k kubeVersion) GitVersion() string { return k.Version }

// apiVersions mirrors Helm's VersionSet (.Capabilities.APIVersions.Has).
type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions apiVersions
}

func parseKubeVersion(s string) (kubeVersion, error) {
	v := strings.TrimPrefix(s, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return kubeVersion{}, fmt.Errorf("--kube-version %q: want vMAJOR.MINOR[.PATCH[-SUFFIX]]", s)
	}
	return kubeVersion{Version: "v" + v, Major: parts[0], Minor: parts[1]}, nil
}

// engine holds the parsed template set; include and tpl close over it.
type engine struct {
	root     *template.Template
	included map[string]int
}

func newEngine() *engine {
	e := &engine{included: map[string]int{}}
	e.root = template.New("gotpl").Option("missingkey=zero").Funcs(e.funcs())
	return e
}

func (e *engine) funcs() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["required"] = required
	f["fromYaml"] = fromYAML
	f["include"] = e.include
	f["tpl"] = e.tpl
	return f
}

func (e *engine) include(name string, data interface{}) (string, error) {
	if e.included[name] > includeMaxDepth {
		return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
	}
	e.included[name]++
	defer func() { e.included[name]-- }()
	var buf strings.Builder
	err := e.root.ExecuteTemplate(&buf, name, data)
	return buf.String(), err
}

// tpl parses the string into a clone of the chart's templates, so it can
// include them without adding to the set the chart renders.
func (e *engine) tpl(text string, data interface{}) (string, error) {
	t, err := e.root.Clone()
	if err != nil {
		return "", err
	}
	t, err = t.New("tpl").Parse(text)
	if err != nil {
		return "", fmt.Errorf("cannot parse template %q: %w", text, err)
	}
	var buf strings.Builder
	if err := t.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
	}
	return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
}

// toYAML is Helm's toYaml: sigs.k8s.io/yaml (JSON first, so map keys are
// sorted and struct tags are JSON's, then yaml.v2), trailing newline cut.
func toYAML(v interface{}) string {
	out, err := marshalLikeSigsYAML(v)
	if err != nil {
		// Helm returns "" on error as well.
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

// fromYAML is Helm's fromYaml: sigs.k8s.io/yaml into a map (YAML, then
// JSON, so numbers are float64 and a document of only comments or null
// gives a nil map); a parse error is returned in the map under "Error",
// not as a rendering error.
func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := unmarshalLikeSigsYAML([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func required(msg string, v interface{}) (interface{}, error) {
	if v == nil {
		return v, errors.New(msg)
	}
	if s, ok := v.(string); ok && s == "" {
		return v, errors.New(msg)
	}
	return v, nil
}

type renderOptions struct {
	chartDir    string
	releaseName string
	namespace   string
	kubeVersion string
	valueFiles  []string
	sets        []string
	setStrings  []string
}

type renderResult struct {
	manifests []manifest // sorted by name
	notes     string
}

type manifest struct {
	name    string // <chart>/templates/<file>
	content string
}

func loadChart(dir string) (*chartMeta, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	var meta chartMeta
	if err := yaml.UnmarshalStrict(raw, &meta); err != nil {
		return nil, fmt.Errorf("Chart.yaml: %w", err)
	}
	if meta.APIVersion != "v2" {
		return nil, fmt.Errorf("Chart.yaml: apiVersion %q, want v2", meta.APIVersion)
	}
	if meta.Name == "" || meta.Version == "" {
		return nil, errors.New("Chart.yaml: name and version are required")
	}
	return &meta, nil
}

// chartFiles is Helm's .Files: the chart's files outside templates/ and
// charts/, other than Chart.yaml, Chart.lock, values.yaml and
// values.schema.json, keyed by their slash path in the chart. .helmignore is
// not read: a file the chart's templates should not see must not be in it.
type chartFiles map[string][]byte

// GetBytes is the file's content; empty when there is no such file.
func (f chartFiles) GetBytes(name string) []byte {
	if v, ok := f[name]; ok {
		return v
	}
	return []byte{}
}

// Get is GetBytes as a string: "" when there is no such file.
func (f chartFiles) Get(name string) string { return string(f.GetBytes(name)) }

// Lines splits the file at "\n" (Helm's: a trailing newline ends the last
// line, it does not start an empty one).
func (f chartFiles) Lines(name string) []string {
	s := f.Get(name)
	if s == "" {
		return []string{}
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// loadFiles reads what Helm's loader puts in .Files.
func loadFiles(dir string) (chartFiles, error) {
	files := chartFiles{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "templates" || rel == "charts" {
				return filepath.SkipDir
			}
			return nil
		}
		switch rel {
		case "Chart.yaml", "Chart.lock", "values.yaml", "values.schema.json":
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[rel] = raw
		return nil
	})
	return files, err
}

// loadTemplates returns templates/ files keyed by "<chart>/templates/<rel>".
func loadTemplates(dir, chartName string) (map[string]string, error) {
	tdir := filepath.Join(dir, "templates")
	files := map[string]string{}
	err := filepath.WalkDir(tdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(tdir, p)
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[path.Join(chartName, "templates", filepath.ToSlash(rel))] = string(raw)
		return nil
	})
	return files, err
}

func render(opts renderOptions) (*renderResult, error) {
	meta, err := loadChart(opts.chartDir)
	if err != nil {
		return nil, err
	}
	values, err := buildValues(opts)
	if err != nil {
		return nil, err
	}
	kv, err := parseKubeVersion(opts.kubeVersion)
	if err != nil {
		return nil, err
	}
	files, err := loadTemplates(opts.chartDir, meta.Name)
	if err != nil {
		return nil, err
	}
	other, err := loadFiles(opts.chartDir)
	if err != nil {
		return nil, err
	}

	e := newEngine()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := e.root.New(name).Parse(files[name]); err != nil {
			return nil, err
		}
	}

	// One top-level object for every template, as in Helm: a template that
	// changes .Values changes it for those rendered after it.
	top := map[string]interface{}{
		"Values": values,
		"Chart":  meta,
		"Files":  other,
		"Release": map[string]interface{}{
			"Name":      opts.releaseName,
			"Namespace": opts.namespace,
			"Service":   "Helm",
			"IsInstall": true,
			"IsUpgrade": false,
			"Revision":  1,
		},
		"Capabilities": capabilities{
			KubeVersion: kv,
			APIVersions: apiVersions{"v1", "apps/v1", "rbac.authorization.k8s.io/v1"},
		},
	}

	// Helm renders in reverse name order; output is sorted by name below.
	res := &renderResult{}
	for i := len(names) - 1; i >= 0; i-- {
		name := names[i]
		base := path.Base(name)
		if strings.HasPrefix(base, "_") {
			continue
		}
		top["Template"] = map[string]interface{}{
			"Name":     name,
			"BasePath": path.Join(meta.Name, "templates"),
		}
		var buf bytes.Buffer
		if err := e.root.ExecuteTemplate(&buf, name, top); err != nil {
			return nil, err
		}
		out := strings.TrimSpace(strings.ReplaceAll(buf.String(), "<no value>", ""))
		if base == "NOTES.txt" {
			res.notes = out
			continue
		}
		if out == "" {
			continue
		}
		if err := checkManifest(name, out); err != nil {
			return nil, err
		}
		res.manifests = append(res.manifests, manifest{name: name, content: out})
	}
	sort.Slice(res.manifests, func(i, j int) bool { return res.manifests[i].name < res.manifests[j].name })
	return res, nil
}

// checkManifest is Helm's check before printing: every document parses as
// YAML and names its apiVersion and kind.
func checkManifest(name, content string) error {
	dec := yaml.NewDecoder(strings.NewReader(content))
	for i := 0; ; i++ {
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		err := dec.Decode(&head)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("YAML parse error on %s: %w", name, err)
		}
		if head.APIVersion == "" || head.Kind == "" {
			return fmt.Errorf("%s: document %d has no apiVersion or kind", name, i)
		}
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var opts renderOptions
	var values, sets, setStrings stringList
	var output, notesOut string
	fl := flag.NewFlagSet("chart-render", flag.ContinueOnError)
	fl.StringVar(&opts.chartDir, "chart", "", "chart directory (holds Chart.yaml, values.yaml, templates/); required")
	fl.StringVar(&opts.releaseName, "name", "release-name", ".Release.Name")
	fl.StringVar(&opts.namespace, "namespace", "default", ".Release.Namespace")
	fl.StringVar(&opts.kubeVersion, "kube-version", "v1.31.0", ".Capabilities.KubeVersion")
	fl.Var(&values, "values", "values file merged over values.yaml (repeatable, in order)")
	fl.Var(&values, "f", "same as --values")
	fl.Var(&sets, "set", "a.b=c[,x.y=z] with Helm's typing (true/false/null/integers); repeatable")
	fl.Var(&setStrings, "set-string", "like --set, every value a string; repeatable")
	fl.StringVar(&output, "output", "", "write the manifests here instead of stdout")
	fl.StringVar(&notesOut, "notes", "", "write the rendered NOTES.txt here instead of stderr")
	if err := fl.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if opts.chartDir == "" || fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: chart-render --chart DIR [--name N] [--namespace NS] [--kube-version V] [--values F]... [--set K=V]... [--set-string K=V]... [--output F] [--notes F]")
		os.Exit(2)
	}
	opts.valueFiles, opts.sets, opts.setStrings = values, sets, setStrings

	res, err := render(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chart-render: %v\n", err)
		os.Exit(1)
	}
	var buf bytes.Buffer
	for _, m := range res.manifests {
		fmt.Fprintf(&buf, "---\n# Source: %s\n%s\n", m.name, m.content)
	}
	if output == "" {
		os.Stdout.Write(buf.Bytes())
	} else if err := os.WriteFile(output, buf.Bytes(), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "chart-render: %v\n", err)
		os.Exit(1)
	}
	if res.notes != "" {
		if notesOut == "" {
			fmt.Fprintf(os.Stderr, "NOTES:\n%s\n", res.notes)
		} else if err := os.WriteFile(notesOut, []byte(res.notes+"\n"), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "chart-render: %v\n", err)
			os.Exit(1)
		}
	}
}
