package main

import "strings"

// discovery builds the legacy discovery documents (APIVersions,
// APIGroupList, APIGroup, APIResourceList) for the served resources.
func discovery(path, host string) map[string]any {
	switch path {
	case "/api":
		return map[string]any{
			"kind":     "APIVersions",
			"versions": []any{"v1"},
			"serverAddressByClientCIDRs": []any{
				map[string]any{"clientCIDR": "0.0.0.0/0", "serverAddress": host},
			},
		}
	case "/apis":
		var groups []any
		for _, gv := range groupVersions() {
			if isCoreGV(gv) {
				continue
			}
			groups = append(groups, apiGroup(gv))
		}
		return map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
	case "/apis/apps":
		g := apiGroup("apps/v1")
		g["kind"], g["apiVersion"] = "APIGroup", "v1"
		return g
	}
	gv := strings.TrimPrefix(strings.TrimPrefix(path, "/api/"), "/apis/")
	var list []any
	for _, r := range resources {
		if r.apiVersion() != gv {
			continue
		}
		e := map[string]any{
			"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
			"kind": r.kind, "verbs": objectVerbs,
		}
		if len(r.shortNames) > 0 {
			e["shortNames"] = r.shortNames
		}
		if len(r.categories) > 0 {
			e["categories"] = r.categories
		}
		list = append(list, e)
		if !r.noStatus {
			list = append(list, map[string]any{"name": r.plural + "/status", "singularName": "",
				"namespaced": r.namespaced, "kind": r.kind, "verbs": statusVerbs})
		}
	}
	return map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}
}

func apiGroup(gv string) map[string]any {
	name, version, _ := strings.Cut(gv, "/")
	v := map[string]any{"groupVersion": gv, "version": version}
	return map[string]any{"name": name, "versions": []any{v}, "preferredVersion": v}
}

// openAPIV3 serves just enough OpenAPI v3 for kubectl's query-param
// verifier: for each kind, a PATCH operation that carries the
// x-kubernetes-group-version-kind extension and the fieldValidation
// parameter. kubectl then leaves validation to the server (sending
// fieldValidation=Strict) instead of failing with "failed to download
// openapi" or needing --validate=false. There are no schemas (components),
// so kubectl apply computes patches from its compiled-in types and
// kubectl explain has nothing to show.
func openAPIV3(path, kubeVersion string) (map[string]any, bool) {
	if path == "/openapi/v3" {
		paths := map[string]any{}
		for _, gv := range groupVersions() {
			p := "apis/" + gv
			if isCoreGV(gv) {
				p = "api/" + gv
			}
			paths[p] = map[string]any{"serverRelativeURL": "/openapi/v3/" + p + "?hash=" + kubeVersion}
		}
		return map[string]any{"paths": paths}, true
	}
	gv := strings.TrimPrefix(path, "/openapi/v3/")
	switch {
	case strings.HasPrefix(gv, "api/"):
		gv = strings.TrimPrefix(gv, "api/")
		if !isCoreGV(gv) {
			return nil, false
		}
	case strings.HasPrefix(gv, "apis/"):
		gv = strings.TrimPrefix(gv, "apis/")
		if isCoreGV(gv) {
			return nil, false
		}
	default:
		return nil, false
	}
	paths := map[string]any{}
	for _, r := range resources {
		if r.apiVersion() != gv {
			continue
		}
		prefix := "/api/" + gv
		if !isCoreGV(gv) {
			prefix = "/apis/" + gv
		}
		if r.namespaced {
			prefix += "/namespaces/{namespace}"
		}
		group, version := "", gv
		if g, v, ok := strings.Cut(gv, "/"); ok {
			group, version = g, v
		}
		suffixes := []string{"", "/status"}
		if r.noStatus {
			suffixes = suffixes[:1]
		}
		for _, suffix := range suffixes {
			var params []any
			for _, name := range []string{"dryRun", "fieldManager", "fieldValidation", "force"} {
				params = append(params, map[string]any{"name": name, "in": "query", "schema": map[string]any{"type": "string"}})
			}
			paths[prefix+"/"+r.plural+"/{name}"+suffix] = map[string]any{
				"patch": map[string]any{
					"operationId":         "patch" + r.kind + strings.TrimPrefix(suffix, "/"),
					"parameters":          params,
					"responses":           map[string]any{"200": map[string]any{"description": "OK"}},
					"x-kubernetes-action": "patch",
					"x-kubernetes-group-version-kind": map[string]any{
						"group": group, "version": version, "kind": r.kind},
				},
			}
		}
	}
	if len(paths) == 0 {
		return nil, false
	}
	return map[string]any{
		"openapi": "3.0.0",
		"info":    map[string]any{"title": "Kubernetes", "version": kubeVersion},
		"paths":   paths,
	}, true
}
