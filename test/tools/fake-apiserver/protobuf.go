package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// kubectl's typed clients (kubectl create namespace, ...) send
// application/vnd.kubernetes.protobuf bodies with no JSON fallback, so the
// fake decodes the one kind they create here: Namespace. Responses stay JSON,
// which those clients also accept.

const protobufType = "application/vnd.kubernetes.protobuf"

var protobufMagic = []byte("k8s\x00")

type pbField struct {
	num    int
	wire   int
	varint uint64
	bytes  []byte
}

func pbParse(b []byte) ([]pbField, error) {
	var out []pbField
	for len(b) > 0 {
		tag, n := pbVarint(b)
		if n <= 0 {
			return nil, errors.New("bad protobuf tag")
		}
		b = b[n:]
		f := pbField{num: int(tag >> 3), wire: int(tag & 7)}
		switch f.wire {
		case 0:
			f.varint, n = pbVarint(b)
			if n <= 0 {
				return nil, errors.New("bad protobuf varint")
			}
			b = b[n:]
		case 2:
			l, n := pbVarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return nil, errors.New("bad protobuf length")
			}
			f.bytes = b[n : n+int(l)]
			b = b[n+int(l):]
		case 1:
			if len(b) < 8 {
				return nil, errors.New("short protobuf fixed64")
			}
			b = b[8:]
		case 5:
			if len(b) < 4 {
				return nil, errors.New("short protobuf fixed32")
			}
			b = b[4:]
		default:
			return nil, fmt.Errorf("unsupported protobuf wire type %d", f.wire)
		}
		out = append(out, f)
	}
	return out, nil
}

func pbVarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, -1
}

// decodeProtobufObject unwraps the runtime.Unknown envelope and converts
// the object to the JSON form the rest of the server works on.
func decodeProtobufObject(body []byte, res *resource) (map[string]any, *apiError) {
	unsupported := &apiError{415, "UnsupportedMediaType",
		fmt.Sprintf("fake-apiserver decodes %s bodies only for Namespace; send application/json", protobufType), nil}
	if res.plural != "namespaces" {
		return nil, unsupported
	}
	if !bytes.HasPrefix(body, protobufMagic) {
		return nil, errBadRequest("provided object is not a protobuf-encoded Kubernetes object (missing k8s magic prefix)")
	}
	env, err := pbParse(body[len(protobufMagic):])
	if err != nil {
		return nil, errBadRequest(err.Error())
	}
	var raw []byte
	var apiVersion, kind string
	for _, f := range env {
		switch f.num {
		case 1:
			tm, err := pbParse(f.bytes)
			if err != nil {
				return nil, errBadRequest(err.Error())
			}
			for _, t := range tm {
				switch t.num {
				case 1:
					apiVersion = string(t.bytes)
				case 2:
					kind = string(t.bytes)
				}
			}
		case 2:
			raw = f.bytes
		}
	}
	fields, err := pbParse(raw)
	if err != nil {
		return nil, errBadRequest(err.Error())
	}
	obj := map[string]any{}
	if apiVersion != "" {
		obj["apiVersion"] = apiVersion
	}
	if kind != "" {
		obj["kind"] = kind
	}
	for _, f := range fields {
		switch f.num {
		case 1:
			md, err := pbObjectMeta(f.bytes)
			if err != nil {
				return nil, errBadRequest(err.Error())
			}
			obj["metadata"] = md
		case 2: // NamespaceSpec
			spec := map[string]any{}
			sub, err := pbParse(f.bytes)
			if err != nil {
				return nil, errBadRequest(err.Error())
			}
			appendStrings(spec, "finalizers", sub, 1)
			if len(spec) > 0 {
				obj["spec"] = spec
			}
		case 3: // NamespaceStatus; conditions are left out
			sub, err := pbParse(f.bytes)
			if err != nil {
				return nil, errBadRequest(err.Error())
			}
			for _, s := range sub {
				if s.num == 1 && len(s.bytes) > 0 {
					obj["status"] = map[string]any{"phase": string(s.bytes)}
				}
			}
		}
	}
	return obj, checkTypeMeta(obj, res)
}

func appendStrings(m map[string]any, key string, fields []pbField, num int) {
	for _, f := range fields {
		if f.num == num {
			list, _ := m[key].([]any)
			m[key] = append(list, string(f.bytes))
		}
	}
}

// pbObjectMeta converts metav1.ObjectMeta (generated.proto field numbers),
// dropping empty values as the JSON encoding's omitempty does.
func pbObjectMeta(b []byte) (map[string]any, error) {
	fields, err := pbParse(b)
	if err != nil {
		return nil, err
	}
	md := map[string]any{}
	str := map[int]string{1: "name", 2: "generateName", 3: "namespace", 4: "selfLink", 5: "uid", 6: "resourceVersion"}
	for _, f := range fields {
		if k, ok := str[f.num]; ok {
			if len(f.bytes) > 0 {
				md[k] = string(f.bytes)
			}
			continue
		}
		switch f.num {
		case 7, 10:
			if f.varint != 0 {
				k := map[int]string{7: "generation", 10: "deletionGracePeriodSeconds"}[f.num]
				md[k] = json.Number(strconv.FormatInt(int64(f.varint), 10))
			}
		case 8, 9:
			ts, err := pbParse(f.bytes)
			if err != nil {
				return nil, err
			}
			var secs int64
			for _, t := range ts {
				if t.num == 1 {
					secs = int64(t.varint)
				}
			}
			if secs != 0 {
				k := map[int]string{8: "creationTimestamp", 9: "deletionTimestamp"}[f.num]
				md[k] = time.Unix(secs, 0).UTC().Format(time.RFC3339)
			}
		case 11, 12:
			entry, err := pbParse(f.bytes)
			if err != nil {
				return nil, err
			}
			var k, v string
			for _, e := range entry {
				switch e.num {
				case 1:
					k = string(e.bytes)
				case 2:
					v = string(e.bytes)
				}
			}
			name := map[int]string{11: "labels", 12: "annotations"}[f.num]
			m, _ := md[name].(map[string]any)
			if m == nil {
				m = map[string]any{}
				md[name] = m
			}
			m[k] = v
		case 13:
			ref, err := pbParse(f.bytes)
			if err != nil {
				return nil, err
			}
			o := map[string]any{}
			for _, r := range ref {
				switch r.num {
				case 1:
					o["kind"] = string(r.bytes)
				case 3:
					o["name"] = string(r.bytes)
				case 4:
					o["uid"] = string(r.bytes)
				case 5:
					o["apiVersion"] = string(r.bytes)
				case 6:
					o["controller"] = r.varint != 0
				case 7:
					o["blockOwnerDeletion"] = r.varint != 0
				}
			}
			list, _ := md["ownerReferences"].([]any)
			md["ownerReferences"] = append(list, o)
		case 14:
			list, _ := md["finalizers"].([]any)
			md["finalizers"] = append(list, string(f.bytes))
		}
	}
	return md, nil
}
