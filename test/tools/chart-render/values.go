package main

// Values: loading, Helm's coalescing and Helm's --set syntax (strvals).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	yaml "gopkg.in/yaml.v2"
)

// Helm refuses list indexes above this in --set (strvals.MaxIndex).
const maxSetIndex = 65536

// buildValues: the user's values (every --values file merged in order, then
// --set and --set-string applied) coalesced over the chart's values.yaml.
func buildValues(opts renderOptions) (map[string]interface{}, error) {
	defaults, err := readValuesFile(filepath.Join(opts.chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	user := map[string]interface{}{}
	for _, f := range opts.valueFiles {
		v, err := readValuesFile(f)
		if err != nil {
			return nil, err
		}
		user = mergeMaps(user, v)
	}
	for _, s := range opts.sets {
		if err := parseSet(s, user, false); err != nil {
			return nil, fmt.Errorf("--set %q: %w", s, err)
		}
	}
	for _, s := range opts.setStrings {
		if err := parseSet(s, user, true); err != nil {
			return nil, fmt.Errorf("--set-string %q: %w", s, err)
		}
	}
	return coalesce(user, defaults), nil
}

// readValuesFile gives what Helm gives: YAML through JSON, so maps are
// map[string]interface{} and every number is a float64.
func readValuesFile(p string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var out map[string]interface{}
	if err := unmarshalLikeSigsYAML(raw, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if out == nil {
		out = map[string]interface{}{}
	}
	return out, nil
}

// unmarshalLikeSigsYAML is sigs.k8s.io/yaml.Unmarshal, which Helm reads
// values and fromYaml with: YAML to JSON, then encoding/json into out (so a
// null document sets a map to nil, and numbers become float64).
func unmarshalLikeSigsYAML(raw []byte, out interface{}) error {
	var y interface{}
	if err := yaml.Unmarshal(raw, &y); err != nil {
		return err
	}
	j, err := json.Marshal(stringKeys(y))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(j, out); err != nil {
		return fmt.Errorf("top level must be a map: %w", err)
	}
	return nil
}

// stringKeys turns yaml.v2's map[interface{}]interface{} into JSON-able maps.
func stringKeys(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[fmt.Sprint(k)] = stringKeys(x)
		}
		return m
	case []interface{}:
		for i := range t {
			t[i] = stringKeys(t[i])
		}
		return t
	}
	return v
}

// marshalLikeSigsYAML is sigs.k8s.io/yaml.Marshal, which Helm's toYaml calls:
// json.Marshal, then JSONToYAML (yaml.v2 unmarshal, yaml.v2 marshal).
func marshalLikeSigsYAML(v interface{}) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return nil, err
	}
	return yaml.Marshal(obj)
}

// mergeMaps is Helm's merge of --values files: b wins, maps merge deeply.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]interface{}); ok {
			if am, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// coalesce is Helm's CoalesceValues for a chart without dependencies: user
// values win over the chart's and maps merge deeply. A user null removes
// the key where the chart has a non-null value for it; where the chart has
// no such key (or a null) the user's null stays, so a template sees nil, as
// mergeOverwrite then copies it over a default. Chart nulls never reach the
// result.
func coalesce(user, defaults map[string]interface{}) map[string]interface{} {
	for k, dv := range defaults {
		uv, present := user[k]
		switch {
		case !present:
			if dv == nil {
				continue
			}
			if dm, ok := dv.(map[string]interface{}); ok {
				dropNils(dm)
			}
			user[k] = dv
		case uv == nil:
			// Helm's top level deletes a user null whatever the chart has.
			delete(user, k)
		default:
			um, uok := uv.(map[string]interface{})
			dm, dok := dv.(map[string]interface{})
			if uok && dok {
				dropNils(dm)
				coalesceTables(um, dm)
			}
		}
	}
	return user
}

// coalesceTables is Helm's coalesceTablesFullKey below the top level: dst
// (the user's) wins; a null in dst deletes the key only where src (the
// chart's) had a non-null value.
func coalesceTables(dst, src map[string]interface{}) {
	for k, sv := range src {
		dv, present := dst[k]
		switch {
		case !present:
			dst[k] = sv
		case dv == nil:
			if sv != nil {
				delete(dst, k)
			}
		default:
			dm, dok := dv.(map[string]interface{})
			sm, sok := sv.(map[string]interface{})
			if dok && sok {
				coalesceTables(dm, sm)
			}
		}
	}
}

// dropNils removes the chart's own nulls, recursively (Helm's cleanNilValues).
func dropNils(m map[string]interface{}) {
	for k, v := range m {
		if v == nil {
			delete(m, k)
		} else if sub, ok := v.(map[string]interface{}); ok {
			dropNils(sub)
		}
	}
}

// pathSeg is one step of a --set key: a map key or a list index.
type pathSeg struct {
	key   string
	index int
	isIdx bool
}

// parseSet applies one --set argument ("a.b=c,d[0].e={x,y}") to dst.
// Backslash escapes the next character in keys and values.
func parseSet(s string, dst map[string]interface{}, asString bool) error {
	r := []rune(s)
	i := 0
	for i < len(r) {
		segs, next, err := parseSetKey(r, i)
		if err != nil {
			return err
		}
		i = next
		var val interface{}
		if i < len(r) && r[i] == '{' {
			val, i, err = parseSetList(r, i+1, asString)
		} else {
			var raw string
			raw, i = readUntil(r, i, ",")
			val = typedVal(raw, asString)
		}
		if err != nil {
			return err
		}
		if i < len(r) {
			if r[i] != ',' {
				return fmt.Errorf("unexpected %q at offset %d", r[i], i)
			}
			i++
		}
		if _, err := setPath(dst, segs, val); err != nil {
			return err
		}
	}
	return nil
}

// parseSetKey reads "a.b[0].c=" and returns the segments and the offset
// after '='.
func parseSetKey(r []rune, i int) ([]pathSeg, int, error) {
	var segs []pathSeg
	var cur strings.Builder
	flush := func() error {
		if cur.Len() == 0 {
			return errors.New("empty key segment")
		}
		segs = append(segs, pathSeg{key: cur.String()})
		cur.Reset()
		return nil
	}
	afterIndex := false
	for ; i < len(r); i++ {
		switch c := r[i]; {
		case c == '\\' && i+1 < len(r):
			i++
			cur.WriteRune(r[i])
		case c == '=':
			if !afterIndex {
				if err := flush(); err != nil {
					return nil, 0, err
				}
			}
			return segs, i + 1, nil
		case c == ',':
			return nil, 0, fmt.Errorf("key %q has no value", cur.String())
		case c == '.':
			if !afterIndex {
				if err := flush(); err != nil {
					return nil, 0, err
				}
			}
			afterIndex = false
		case c == '[':
			if !afterIndex {
				if err := flush(); err != nil {
					return nil, 0, err
				}
			}
			end := i + 1
			for end < len(r) && r[end] != ']' {
				end++
			}
			if end == len(r) {
				return nil, 0, errors.New("unterminated [")
			}
			n, err := strconv.Atoi(string(r[i+1 : end]))
			if err != nil || n < 0 || n > maxSetIndex {
				return nil, 0, fmt.Errorf("bad list index %q", string(r[i+1:end]))
			}
			segs = append(segs, pathSeg{index: n, isIdx: true})
			i = end
			afterIndex = true
		default:
			if afterIndex {
				return nil, 0, fmt.Errorf("unexpected %q after ]", c)
			}
			cur.WriteRune(c)
		}
	}
	return nil, 0, fmt.Errorf("key %q has no value", cur.String())
}

// parseSetList reads "x,y}" (after '{') into a list.
func parseSetList(r []rune, i int, asString bool) ([]interface{}, int, error) {
	list := []interface{}{}
	for {
		raw, next := readUntil(r, i, ",}")
		if next == len(r) {
			return nil, 0, errors.New("list has no closing }")
		}
		if raw != "" || r[next] == ',' || len(list) > 0 {
			list = append(list, typedVal(raw, asString))
		}
		i = next + 1
		if r[next] == '}' {
			return list, i, nil
		}
	}
}

// readUntil reads up to (not including) an unescaped rune of stop.
func readUntil(r []rune, i int, stop string) (string, int) {
	var b strings.Builder
	for ; i < len(r); i++ {
		if r[i] == '\\' && i+1 < len(r) {
			i++
			b.WriteRune(r[i])
			continue
		}
		if strings.ContainsRune(stop, r[i]) {
			break
		}
		b.WriteRune(r[i])
	}
	return b.String(), i
}

// typedVal is Helm's: true/false/null, integers without a leading zero as
// int64, everything else a string (always a string for --set-string).
func typedVal(v string, asString bool) interface{} {
	if asString {
		return v
	}
	switch strings.ToLower(v) {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	case "0":
		return int64(0)
	}
	if v != "" && v[0] != '0' {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return v
}

func setPath(cur interface{}, segs []pathSeg, val interface{}) (interface{}, error) {
	if len(segs) == 0 {
		return val, nil
	}
	s := segs[0]
	if s.isIdx {
		list, _ := cur.([]interface{})
		for len(list) <= s.index {
			list = append(list, nil)
		}
		v, err := setPath(list[s.index], segs[1:], val)
		list[s.index] = v
		return list, err
	}
	m, ok := cur.(map[string]interface{})
	if !ok {
		m = map[string]interface{}{}
	}
	v, err := setPath(m[s.key], segs[1:], val)
	m[s.key] = v
	return m, err
}
