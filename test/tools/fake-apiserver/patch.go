package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// decodeJSON keeps numbers as json.Number so integers of any size survive a
// store/patch/serve round trip byte-for-byte, which float64 would not.
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("unexpected data after the JSON value")
	}
	return v, nil
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		a := make([]any, len(t))
		for i, x := range t {
			a[i] = deepCopy(x)
		}
		return a
	default:
		return v
	}
}

func deepCopyObj(m map[string]any) map[string]any {
	return deepCopy(m).(map[string]any)
}

// mergePatch is RFC 7386. It never mutates target: stored objects are
// shared with in-flight watch events and must stay immutable.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return deepCopy(patch)
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	out := make(map[string]any, len(tm))
	for k, v := range tm {
		out[k] = v
	}
	for k, v := range pm {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], v)
	}
	return out
}

// strategicAsMerge approximates a strategic merge patch with a JSON merge
// patch. That is exact for what kubectl label/annotate and most agents send
// (maps of strings); lists are replaced whole instead of merged by key.
// Directive keys ("$patch", "$retainKeys", "$setElementOrder/...",
// "$deleteFromPrimitiveList/...") are dropped so they never get stored.
func strategicAsMerge(target, patch any) any {
	return mergePatch(target, stripDirectives(patch))
}

func stripDirectives(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			if strings.HasPrefix(k, "$") {
				continue
			}
			out[k] = stripDirectives(x)
		}
		return out
	case []any:
		out := make([]any, 0, len(t))
		for _, x := range t {
			if m, ok := x.(map[string]any); ok {
				if _, isDirective := m["$patch"]; isDirective && len(m) == 1 {
					continue
				}
			}
			out = append(out, stripDirectives(x))
		}
		return out
	default:
		return v
	}
}

type jsonPatchError struct{ msg string }

func (e *jsonPatchError) Error() string { return e.msg }

// jsonPatch applies RFC 6902 operations to a deep copy of doc.
// A failed "test" is reported like the real apiserver does (a 422), a
// malformed patch or a bad path as a 422 too; the caller maps both.
func jsonPatch(doc any, patch any) (any, error) {
	ops, ok := patch.([]any)
	if !ok {
		return nil, &jsonPatchError{"json patch must be an array of operations"}
	}
	doc = deepCopy(doc)
	for i, raw := range ops {
		op, ok := raw.(map[string]any)
		if !ok {
			return nil, &jsonPatchError{fmt.Sprintf("operation %d is not an object", i)}
		}
		name, _ := op["op"].(string)
		path, hasPath := op["path"].(string)
		if !hasPath {
			return nil, &jsonPatchError{fmt.Sprintf("operation %d: missing path", i)}
		}
		var err error
		switch name {
		case "add":
			v, ok := op["value"]
			if !ok {
				return nil, &jsonPatchError{fmt.Sprintf("operation %d: missing value", i)}
			}
			doc, err = pointerAdd(doc, path, deepCopy(v))
		case "remove":
			doc, _, err = pointerRemove(doc, path)
		case "replace":
			v, ok := op["value"]
			if !ok {
				return nil, &jsonPatchError{fmt.Sprintf("operation %d: missing value", i)}
			}
			doc, _, err = pointerRemove(doc, path)
			if err == nil {
				doc, err = pointerAdd(doc, path, deepCopy(v))
			}
		case "test":
			var cur any
			cur, err = pointerGet(doc, path)
			if err == nil && !jsonEqual(cur, op["value"]) {
				err = &jsonPatchError{fmt.Sprintf("testing value %s failed", path)}
			}
		case "move", "copy":
			from, ok := op["from"].(string)
			if !ok {
				return nil, &jsonPatchError{fmt.Sprintf("operation %d: missing from", i)}
			}
			var v any
			if name == "move" {
				doc, v, err = pointerRemove(doc, from)
			} else {
				v, err = pointerGet(doc, from)
				v = deepCopy(v)
			}
			if err == nil {
				doc, err = pointerAdd(doc, path, v)
			}
		default:
			return nil, &jsonPatchError{fmt.Sprintf("Unexpected kind: %s", name)}
		}
		if err != nil {
			return nil, err
		}
	}
	return doc, nil
}

func splitPointer(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	if !strings.HasPrefix(path, "/") {
		return nil, &jsonPatchError{fmt.Sprintf("invalid JSON pointer %q", path)}
	}
	parts := strings.Split(path[1:], "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

func pointerGet(doc any, path string) (any, error) {
	parts, err := splitPointer(path)
	if err != nil {
		return nil, err
	}
	cur := doc
	for _, p := range parts {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[p]
			if !ok {
				return nil, &jsonPatchError{fmt.Sprintf("path %s does not exist", path)}
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return nil, &jsonPatchError{fmt.Sprintf("path %s: bad array index", path)}
			}
			cur = c[i]
		default:
			return nil, &jsonPatchError{fmt.Sprintf("path %s does not exist", path)}
		}
	}
	return cur, nil
}

// pointerAdd returns the new root because adding to an array may
// reallocate it and the parent must be updated with the new slice.
func pointerAdd(doc any, path string, value any) (any, error) {
	parts, err := splitPointer(path)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return value, nil
	}
	return addAt(doc, parts, value, path)
}

func addAt(cur any, parts []string, value any, path string) (any, error) {
	p := parts[0]
	last := len(parts) == 1
	switch c := cur.(type) {
	case map[string]any:
		if last {
			c[p] = value
			return c, nil
		}
		child, ok := c[p]
		if !ok {
			return nil, &jsonPatchError{fmt.Sprintf("add operation does not apply: doc is missing path: %q", path)}
		}
		nc, err := addAt(child, parts[1:], value, path)
		if err != nil {
			return nil, err
		}
		c[p] = nc
		return c, nil
	case []any:
		if last {
			if p == "-" {
				return append(c, value), nil
			}
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i > len(c) {
				return nil, &jsonPatchError{fmt.Sprintf("add operation does not apply: index out of bounds: %q", path)}
			}
			c = append(c, nil)
			copy(c[i+1:], c[i:])
			c[i] = value
			return c, nil
		}
		i, err := strconv.Atoi(p)
		if err != nil || i < 0 || i >= len(c) {
			return nil, &jsonPatchError{fmt.Sprintf("add operation does not apply: doc is missing path: %q", path)}
		}
		nc, err := addAt(c[i], parts[1:], value, path)
		if err != nil {
			return nil, err
		}
		c[i] = nc
		return c, nil
	default:
		return nil, &jsonPatchError{fmt.Sprintf("add operation does not apply: doc is missing path: %q", path)}
	}
}

func pointerRemove(doc any, path string) (any, any, error) {
	parts, err := splitPointer(path)
	if err != nil {
		return nil, nil, err
	}
	if len(parts) == 0 {
		return nil, doc, nil
	}
	return removeAt(doc, parts, path)
}

func removeAt(cur any, parts []string, path string) (any, any, error) {
	p := parts[0]
	last := len(parts) == 1
	missing := &jsonPatchError{fmt.Sprintf("remove operation does not apply: doc is missing path: %q", path)}
	switch c := cur.(type) {
	case map[string]any:
		child, ok := c[p]
		if !ok {
			return nil, nil, missing
		}
		if last {
			delete(c, p)
			return c, child, nil
		}
		nc, removed, err := removeAt(child, parts[1:], path)
		if err != nil {
			return nil, nil, err
		}
		c[p] = nc
		return c, removed, nil
	case []any:
		i, err := strconv.Atoi(p)
		if err != nil || i < 0 || i >= len(c) {
			return nil, nil, missing
		}
		if last {
			removed := c[i]
			return append(c[:i:i], c[i+1:]...), removed, nil
		}
		nc, removed, err := removeAt(c[i], parts[1:], path)
		if err != nil {
			return nil, nil, err
		}
		c[i] = nc
		return c, removed, nil
	default:
		return nil, nil, missing
	}
}

// jsonEqual compares decoded JSON values; numbers compare by value so
// "1" and "1.0" are equal as RFC 6902 "test" requires.
func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		fx, e1 := x.Float64()
		fy, e2 := y.Float64()
		return e1 == nil && e2 == nil && fx == fy
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}
