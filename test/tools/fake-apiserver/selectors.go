package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// labelRequirement is one comma-separated term of a label selector, in the
// grammar of k8s.io/apimachinery/pkg/labels.Parse.
type labelRequirement struct {
	key    string
	op     string // "=", "!=", "in", "notin", "exists", "!"
	values []string
}

type labelSelector []labelRequirement

// Same shape the real validation accepts for keys: an optional DNS prefix
// and a name part. Checked so a typo in a test fails with 400 like it would
// against a cluster instead of silently matching nothing.
var labelKeyRe = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
var labelValueRe = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)

func parseLabelSelector(s string) (labelSelector, error) {
	var sel labelSelector
	p := &selParser{s: s}
	p.skipSpace()
	if p.eof() {
		return nil, nil
	}
	for {
		r, err := p.requirement()
		if err != nil {
			return nil, fmt.Errorf("unable to parse requirement: %v", err)
		}
		sel = append(sel, r)
		p.skipSpace()
		if p.eof() {
			break
		}
		if p.s[p.i] != ',' {
			return nil, fmt.Errorf("unable to parse requirement: found '%c', expected: ','", p.s[p.i])
		}
		p.i++
	}
	return sel, nil
}

type selParser struct {
	s string
	i int
}

func (p *selParser) eof() bool { return p.i >= len(p.s) }

func (p *selParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func isIdentChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '/'
}

func (p *selParser) ident() string {
	p.skipSpace()
	start := p.i
	for p.i < len(p.s) && isIdentChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *selParser) requirement() (labelRequirement, error) {
	p.skipSpace()
	if !p.eof() && p.s[p.i] == '!' {
		p.i++
		key := p.ident()
		if err := checkLabelKey(key); err != nil {
			return labelRequirement{}, err
		}
		return labelRequirement{key: key, op: "!"}, nil
	}
	key := p.ident()
	if err := checkLabelKey(key); err != nil {
		return labelRequirement{}, err
	}
	p.skipSpace()
	if p.eof() || p.s[p.i] == ',' {
		return labelRequirement{key: key, op: "exists"}, nil
	}
	rest := p.s[p.i:]
	switch {
	case strings.HasPrefix(rest, "=="):
		p.i += 2
		return p.singleValue(key, "=")
	case strings.HasPrefix(rest, "!="):
		p.i += 2
		return p.singleValue(key, "!=")
	case strings.HasPrefix(rest, "="):
		p.i++
		return p.singleValue(key, "=")
	}
	word := p.ident()
	var op string
	switch word {
	case "in":
		op = "in"
	case "notin":
		op = "notin"
	default:
		return labelRequirement{}, fmt.Errorf("found '%s', expected: in, notin, =, ==, !=", word)
	}
	p.skipSpace()
	if p.eof() || p.s[p.i] != '(' {
		return labelRequirement{}, fmt.Errorf("found '%s', expected: '('", p.s[p.i:])
	}
	p.i++
	var values []string
	for {
		v := p.ident()
		if err := checkLabelValue(v); err != nil {
			return labelRequirement{}, err
		}
		values = append(values, v)
		p.skipSpace()
		if p.eof() {
			return labelRequirement{}, fmt.Errorf("found '', expected: ',' or ')'")
		}
		if p.s[p.i] == ')' {
			p.i++
			break
		}
		if p.s[p.i] != ',' {
			return labelRequirement{}, fmt.Errorf("found '%c', expected: ',' or ')'", p.s[p.i])
		}
		p.i++
	}
	sort.Strings(values)
	return labelRequirement{key: key, op: op, values: values}, nil
}

func (p *selParser) singleValue(key, op string) (labelRequirement, error) {
	v := p.ident()
	if err := checkLabelValue(v); err != nil {
		return labelRequirement{}, err
	}
	return labelRequirement{key: key, op: op, values: []string{v}}, nil
}

func checkLabelKey(k string) error {
	if k == "" {
		return fmt.Errorf("key is empty")
	}
	if !labelKeyRe.MatchString(k) {
		return fmt.Errorf("invalid label key %q", k)
	}
	return nil
}

func checkLabelValue(v string) error {
	if len(v) > 63 || !labelValueRe.MatchString(v) {
		return fmt.Errorf("invalid label value: %q", v)
	}
	return nil
}

func (sel labelSelector) matches(obj map[string]any) bool {
	labels := map[string]string{}
	if md, ok := obj["metadata"].(map[string]any); ok {
		if l, ok := md["labels"].(map[string]any); ok {
			for k, v := range l {
				if s, ok := v.(string); ok {
					labels[k] = s
				}
			}
		}
	}
	for _, r := range sel {
		v, has := labels[r.key]
		switch r.op {
		case "exists":
			if !has {
				return false
			}
		case "!":
			if has {
				return false
			}
		case "=":
			if !has || v != r.values[0] {
				return false
			}
		case "!=":
			// Matches objects without the label too, as in apimachinery.
			if has && v == r.values[0] {
				return false
			}
		case "in":
			if !has || !contains(r.values, v) {
				return false
			}
		case "notin":
			if has && contains(r.values, v) {
				return false
			}
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type fieldRequirement struct {
	field string
	neg   bool
	value string
}

type fieldSelector []fieldRequirement

// parseFieldSelector follows k8s.io/apimachinery/pkg/fields.ParseSelector:
// comma-separated terms of the form f=v, f==v or f!=v, with "\," "\=" "\!"
// and "\\" escapes in values. Only fields the real apiserver indexes for
// the resource are accepted; anything else is the same 400 a cluster gives,
// so a test cannot pass with a selector a real apiserver would refuse.
func parseFieldSelector(s string, res *resource) (fieldSelector, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var sel fieldSelector
	for _, term := range splitUnescaped(s, ',') {
		var op string
		idx := -1
		for i := 0; i < len(term); i++ {
			if term[i] == '\\' {
				i++
				continue
			}
			if strings.HasPrefix(term[i:], "!=") {
				op, idx = "!=", i
				break
			}
			if strings.HasPrefix(term[i:], "==") {
				op, idx = "==", i
				break
			}
			if term[i] == '=' {
				op, idx = "=", i
				break
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("invalid selector: '%s'; can't understand '%s'", s, term)
		}
		field := strings.TrimSpace(term[:idx])
		value := unescapeFieldValue(term[idx+len(op):])
		if !res.supportsField(field) {
			return nil, fmt.Errorf("field label not supported: %s", field)
		}
		sel = append(sel, fieldRequirement{field: field, neg: op == "!=", value: value})
	}
	return sel, nil
}

func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == sep {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func unescapeFieldValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

func (sel fieldSelector) matches(obj map[string]any) bool {
	for _, r := range sel {
		if (fieldValue(obj, r.field) == r.value) == r.neg {
			return false
		}
	}
	return true
}

// fieldValue renders a field the way the apiserver's field-label
// conversion does: missing fields are "", booleans "true"/"false".
func fieldValue(obj map[string]any, path string) string {
	var cur any = obj
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[part]
	}
	switch v := cur.(type) {
	case string:
		return v
	case bool:
		if v {
			return "true"
		}
		return "false"
	case json.Number:
		return v.String()
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}
