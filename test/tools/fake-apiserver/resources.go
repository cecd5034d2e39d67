package main

import "strings"

// resource describes one served REST resource. The set is fixed: it is what
// the node agent and the e2e tests touch, and discovery must list exactly
// what the handlers serve or kubectl will try paths that 404.
type resource struct {
	group      string // "" for core
	version    string
	plural     string
	singular   string
	kind       string
	namespaced bool
	shortNames []string
	categories []string
	// generation is bumped on spec changes only for kinds whose
	// controllers rely on metadata.generation/observedGeneration.
	generation bool
	// No /status subresource (events).
	noStatus bool
	// Field labels the real apiserver accepts in fieldSelector for this
	// kind (on top of metadata.name and metadata.namespace).
	fields []string
}

func (r *resource) apiVersion() string {
	if r.group == "" {
		return r.version
	}
	return r.group + "/" + r.version
}

func (r *resource) listKind() string { return r.kind + "List" }

// groupResource is how the real apiserver names the resource in Status
// messages: "pods", "daemonsets.apps".
func (r *resource) groupResource() string {
	if r.group == "" {
		return r.plural
	}
	return r.plural + "." + r.group
}

func (r *resource) supportsField(f string) bool {
	if f == "metadata.name" || (r.namespaced && f == "metadata.namespace") {
		return true
	}
	for _, x := range r.fields {
		if x == f {
			return true
		}
	}
	return false
}

// Verbs as the real discovery documents advertise them.
var (
	objectVerbs = []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
	statusVerbs = []string{"get", "patch", "update"}
)

var resources = []*resource{
	{
		version: "v1", plural: "namespaces", singular: "namespace", kind: "Namespace",
		shortNames: []string{"ns"},
		fields:     []string{"status.phase"},
	},
	{
		version: "v1", plural: "nodes", singular: "node", kind: "Node",
		shortNames: []string{"no"},
		fields:     []string{"spec.unschedulable"},
	},
	{
		version: "v1", plural: "pods", singular: "pod", kind: "Pod", namespaced: true,
		shortNames: []string{"po"}, categories: []string{"all"},
		// pkg/registry/core/pod.ToSelectableFields
		fields: []string{"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
			"spec.serviceAccountName", "spec.hostNetwork", "status.phase",
			"status.podIP", "status.podIPs", "status.nominatedNodeName"},
	},
	{
		// Where the node agent reports drift it repaired in a pod.
		version: "v1", plural: "events", singular: "event", kind: "Event", namespaced: true,
		shortNames: []string{"ev"}, noStatus: true,
		fields: []string{"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
			"involvedObject.uid", "reason", "source", "type"},
	},
	{
		group: "apps", version: "v1", plural: "daemonsets", singular: "daemonset", kind: "DaemonSet",
		namespaced: true, shortNames: []string{"ds"}, categories: []string{"all"},
		generation: true,
	},
}

// groupVersions lists the served group/versions in the order discovery
// returns them.
func groupVersions() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range resources {
		gv := r.apiVersion()
		if !seen[gv] {
			seen[gv] = true
			out = append(out, gv)
		}
	}
	return out
}

func findResource(gv, plural string) *resource {
	for _, r := range resources {
		if r.apiVersion() == gv && r.plural == plural {
			return r
		}
	}
	return nil
}

func resourceByName(plural string) *resource {
	for _, r := range resources {
		if r.plural == plural {
			return r
		}
	}
	return nil
}

func isCoreGV(gv string) bool { return !strings.Contains(gv, "/") }
