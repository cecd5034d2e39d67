package chart

// Renders charts/ambient-cni with test/tools/chart-render (Helm's template
// semantics; Helm itself is not in Debian) and checks the objects a node
// would get: image, env, mounts, capabilities, probe, RBAC, ConfigMap; what
// each platform and profile changes; and the optional objects upstream's
// values add (NetworkAttachmentDefinition, ResourceQuota, NetworkPolicy).
//
// Environment: CHART_RENDER (the chart-render binary), CHART_DIR (the chart).

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	yaml "gopkg.in/yaml.v2"
)

const namespace = "istio-system"

type obj = map[string]interface{}

// rendered objects by "Kind/name".
type objects map[string]obj

func runRender(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin, dir := os.Getenv("CHART_RENDER"), os.Getenv("CHART_DIR")
	if bin == "" || dir == "" {
		t.Fatal("CHART_RENDER and CHART_DIR must be set (run test/chart/chart_test.sh)")
	}
	notes := filepath.Join(t.TempDir(), "NOTES.txt")
	full := append([]string{"--chart", dir, "--name", "ambient", "--namespace", namespace, "--notes", notes}, args...)
	cmd := exec.Command(bin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if n, rerr := os.ReadFile(notes); rerr == nil {
		errb.WriteString("NOTES:\n" + string(n))
	}
	return out.String(), errb.String(), err
}

// render renders and parses; the test fails if rendering does.
func render(t *testing.T, args ...string) (objects, string) {
	t.Helper()
	out, stderr, err := runRender(t, args...)
	if err != nil {
		t.Fatalf("chart-render %v: %v\n%s", args, err, stderr)
	}
	objs := objects{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var doc interface{}
		err := dec.Decode(&doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, out)
		}
		if doc == nil {
			continue
		}
		o := normalize(doc).(obj)
		key := fmt.Sprintf("%s/%s", o["kind"], at(o, "metadata", "name"))
		if _, dup := objs[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		objs[key] = o
	}
	return objs, stderr
}

// normalize turns yaml.v2's map[interface{}]interface{} into string keys.
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := obj{}
		for k, x := range t {
			m[fmt.Sprint(k)] = normalize(x)
		}
		return m
	case []interface{}:
		for i := range t {
			t[i] = normalize(t[i])
		}
	}
	return v
}

// at walks map keys (string) and list indexes (int); nil when absent.
func at(v interface{}, path ...interface{}) interface{} {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(obj)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]interface{})
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func (o objects) get(t *testing.T, key string) obj {
	t.Helper()
	v, ok := o[key]
	if !ok {
		keys := make([]string, 0, len(o))
		for k := range o {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Fatalf("%s not rendered; have %v", key, keys)
	}
	return v
}

// container is the DaemonSet's single container.
func container(t *testing.T, o objects) obj {
	t.Helper()
	cs, _ := at(o.get(t, "DaemonSet/istio-cni-node"), "spec", "template", "spec", "containers").([]interface{})
	if len(cs) != 1 {
		t.Fatalf("DaemonSet has %d containers, want 1", len(cs))
	}
	return cs[0].(obj)
}

func podSpec(t *testing.T, o objects) obj {
	t.Helper()
	return at(o.get(t, "DaemonSet/istio-cni-node"), "spec", "template", "spec").(obj)
}

// envOf maps env names to their value, or "fieldRef:<path>".
func envOf(t *testing.T, c obj) map[string]string {
	t.Helper()
	env := map[string]string{}
	list, _ := c["env"].([]interface{})
	for _, e := range list {
		name := fmt.Sprint(at(e, "name"))
		if _, dup := env[name]; dup {
			t.Errorf("env %s set twice", name)
		}
		if f := at(e, "valueFrom", "fieldRef", "fieldPath"); f != nil {
			env[name] = "fieldRef:" + fmt.Sprint(f)
		} else if v, ok := at(e, "value").(string); ok {
			env[name] = v
		} else {
			t.Errorf("env %s: value %#v is not a string", name, at(e, "value"))
		}
	}
	return env
}

func configData(t *testing.T, o objects) map[string]string {
	t.Helper()
	data := map[string]string{}
	for k, v := range at(o.get(t, "ConfigMap/istio-cni-config"), "data").(obj) {
		s, ok := v.(string)
		if !ok {
			t.Errorf("ConfigMap %s = %#v (%T), want a string", k, v, v)
		}
		data[k] = s
	}
	return data
}

type mount struct {
	hostPath, hostType, propagation string
	readOnly                        bool
}

// mounts joins volumeMounts with their hostPath volumes, by mountPath.
func mounts(t *testing.T, o objects) map[string]mount {
	t.Helper()
	vols := map[string]obj{}
	for _, v := range at(podSpec(t, o), "volumes").([]interface{}) {
		vols[fmt.Sprint(at(v, "name"))] = v.(obj)
	}
	got := map[string]mount{}
	for _, m := range container(t, o)["volumeMounts"].([]interface{}) {
		vol, ok := vols[fmt.Sprint(at(m, "name"))]
		if !ok {
			t.Fatalf("mount %v names no volume", m)
		}
		str := func(v interface{}) string {
			if v == nil {
				return ""
			}
			return fmt.Sprint(v)
		}
		ro, _ := at(m, "readOnly").(bool)
		got[str(at(m, "mountPath"))] = mount{
			hostPath:    str(at(vol, "hostPath", "path")),
			hostType:    str(at(vol, "hostPath", "type")),
			propagation: str(at(m, "mountPropagation")),
			readOnly:    ro,
		}
	}
	if len(vols) != len(got) {
		t.Errorf("%d volumes but %d mounts", len(vols), len(got))
	}
	return got
}

func wantEqual(t *testing.T, what string, got, want interface{}) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func TestDefaultsRenderTheSpecObjects(t *testing.T) {
	o, notes := render(t)

	var keys []string
	for k, v := range o {
		keys = append(keys, k)
		if ns := at(v, "metadata", "namespace"); strings.HasPrefix(k, "Cluster") {
			wantEqual(t, k+" namespace", ns, nil)
		} else {
			wantEqual(t, k+" namespace", ns, namespace)
		}
	}
	sort.Strings(keys)
	wantEqual(t, "objects", keys, []string{
		"ClusterRole/istio-cni", "ClusterRole/istio-cni-ambient",
		"ClusterRoleBinding/istio-cni", "ClusterRoleBinding/istio-cni-ambient",
		"ConfigMap/istio-cni-config", "DaemonSet/istio-cni-node", "ServiceAccount/istio-cni",
	})

	ds := o.get(t, "DaemonSet/istio-cni-node")
	wantEqual(t, "selector", at(ds, "spec", "selector", "matchLabels"), obj{"k8s-app": "istio-cni-node"})
	labels := at(ds, "spec", "template", "metadata", "labels").(obj)
	for k, v := range map[string]string{
		"k8s-app": "istio-cni-node", "sidecar.istio.io/inject": "false",
		"istio.io/dataplane-mode": "none", "app.kubernetes.io/name": "istio-cni",
	} {
		wantEqual(t, "pod label "+k, labels[k], v)
	}
	ann := at(ds, "spec", "template", "metadata", "annotations").(obj)
	wantEqual(t, "prometheus.io/port", ann["prometheus.io/port"], "15014")
	wantEqual(t, "prometheus.io/scrape", ann["prometheus.io/scrape"], "true")
	wantEqual(t, "apparmor annotation", ann["container.apparmor.security.beta.kubernetes.io/install-cni"], "unconfined")
	wantEqual(t, "updateStrategy", at(ds, "spec", "updateStrategy"),
		obj{"type": "RollingUpdate", "rollingUpdate": obj{"maxUnavailable": 1}})

	ps := podSpec(t, o)
	wantEqual(t, "hostNetwork", ps["hostNetwork"], nil)
	wantEqual(t, "hostPID", ps["hostPID"], nil)
	wantEqual(t, "serviceAccountName", ps["serviceAccountName"], "istio-cni")
	wantEqual(t, "priorityClassName", ps["priorityClassName"], "system-node-critical")
	wantEqual(t, "terminationGracePeriodSeconds", ps["terminationGracePeriodSeconds"], 30)
	wantEqual(t, "nodeSelector", ps["nodeSelector"], obj{"kubernetes.io/os": "linux"})
	wantEqual(t, "tolerations", ps["tolerations"], []interface{}{
		obj{"effect": "NoSchedule", "operator": "Exists"},
		obj{"key": "CriticalAddonsOnly", "operator": "Exists"},
		obj{"effect": "NoExecute", "operator": "Exists"},
	})

	c := container(t, o)
	wantEqual(t, "image", c["image"], "docker.io/library/ambient-cni:latest")
	wantEqual(t, "imagePullPolicy", c["imagePullPolicy"], "IfNotPresent")
	wantEqual(t, "command", c["command"], []interface{}{"ambient-agent"})
	wantEqual(t, "args", c["args"], []interface{}{"--log_output_level=info"})
	wantEqual(t, "ports", c["ports"], []interface{}{obj{"containerPort": 15014, "name": "metrics", "protocol": "TCP"}})
	wantEqual(t, "readinessProbe", c["readinessProbe"], obj{"httpGet": obj{"path": "/readyz", "port": 8000}})
	wantEqual(t, "livenessProbe", c["livenessProbe"], nil)
	wantEqual(t, "resources", c["resources"], obj{"requests": obj{"cpu": "100m", "memory": "100Mi"}})

	sc := c["securityContext"].(obj)
	wantEqual(t, "privileged", sc["privileged"], false)
	wantEqual(t, "runAsUser", sc["runAsUser"], 0)
	wantEqual(t, "runAsGroup", sc["runAsGroup"], 0)
	wantEqual(t, "runAsNonRoot", sc["runAsNonRoot"], false)
	wantEqual(t, "capabilities.drop", at(sc, "capabilities", "drop"), []interface{}{"ALL"})
	var caps []string
	for _, c := range at(sc, "capabilities", "add").([]interface{}) {
		caps = append(caps, c.(string))
	}
	sort.Strings(caps)
	wantEqual(t, "capabilities.add", caps, []string{"DAC_OVERRIDE", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"})
	wantEqual(t, "appArmorProfile", sc["appArmorProfile"], nil)
	wantEqual(t, "seLinuxOptions", sc["seLinuxOptions"], nil)

	wantEqual(t, "envFrom", c["envFrom"], []interface{}{obj{"configMapRef": obj{"name": "istio-cni-config"}}})
	wantEqual(t, "env", envOf(t, c), map[string]string{
		"NODE_NAME":               "fieldRef:spec.nodeName",
		"POD_NAME":                "fieldRef:metadata.name",
		"POD_NAMESPACE":           "fieldRef:metadata.namespace",
		"AMBIENT_HOST_ROOT":       "/host",
		"ALLOW_SWITCH_TO_HOST_NS": "true",
	})

	wantEqual(t, "mounts", mounts(t, o), map[string]mount{
		"/host/opt/cni/bin":   {hostPath: "/opt/cni/bin"},
		"/host/proc":          {hostPath: "/proc", hostType: "Directory", readOnly: true},
		"/host/etc/cni/net.d": {hostPath: "/etc/cni/net.d"},
		"/var/run/istio-cni":  {hostPath: "/var/run/istio-cni"},
		"/host/var/run/netns": {hostPath: "/var/run/netns", hostType: "DirectoryOrCreate", propagation: "HostToContainer"},
		"/var/run/ztunnel":    {hostPath: "/var/run/ztunnel", hostType: "DirectoryOrCreate"},
	})

	data := configData(t, o)
	for k, v := range map[string]string{
		"CURRENT_AGENT_VERSION":                  "latest",
		"AMBIENT_ENABLED":                        "true",
		"AMBIENT_DNS_CAPTURE":                    "true",
		"AMBIENT_IPV6":                           "true",
		"AMBIENT_RECONCILE_POD_RULES_ON_STARTUP": "true",
		"ENABLE_AMBIENT_DETECTION_RETRY":         "false",
		"AMBIENT_EBPF_REDIRECTION":               "false",
		"ISTIO_OWNED_CNI_CONFIG":                 "false",
		"CHAINED_CNI_PLUGIN":                     "true",
		"EXCLUDE_NAMESPACES":                     "kube-system",
		"NATIVE_NFTABLES":                        "false",
		"REPAIR_ENABLED":                         "false",
		"REPAIR_REPAIR_PODS":                     "true",
		"REPAIR_INIT_CONTAINER_NAME":             "istio-validation",
		"REPAIR_BROKEN_POD_LABEL_KEY":            "cni.istio.io/uninitialized",
		"REPAIR_BROKEN_POD_LABEL_VALUE":          "true",
	} {
		wantEqual(t, "ConfigMap "+k, data[k], v)
	}
	for _, k := range []string{"CNI_CONF_NAME", "ISTIO_OWNED_CNI_CONFIG_FILENAME", "ISTIO_OWNED_CNI_CONF_FILENAME"} {
		if _, ok := data[k]; ok {
			t.Errorf("ConfigMap has %s by default", k)
		}
	}
	// The agent reads the selectors as YAML: they must be upstream's default two
	// (docs/compatibility.md#chart-values).
	var sel interface{}
	if err := yaml.Unmarshal([]byte(data["AMBIENT_ENABLEMENT_SELECTOR"]), &sel); err != nil {
		t.Fatalf("AMBIENT_ENABLEMENT_SELECTOR is not YAML: %v", err)
	}
	wantEqual(t, "AMBIENT_ENABLEMENT_SELECTOR", normalize(sel), []interface{}{
		obj{"podSelector": obj{"matchLabels": obj{"istio.io/dataplane-mode": "ambient"}}},
		obj{
			"podSelector": obj{"matchExpressions": []interface{}{
				obj{"key": "istio.io/dataplane-mode", "operator": "NotIn", "values": []interface{}{"none"}},
			}},
			"namespaceSelector": obj{"matchLabels": obj{"istio.io/dataplane-mode": "ambient"}},
		},
	})

	if !strings.Contains(notes, "kubectl -n istio-system rollout status daemonset/istio-cni-node") {
		t.Errorf("NOTES do not say how to wait for the DaemonSet:\n%s", notes)
	}
}

// rbacRule is one (apiGroup, resource, resourceName, verb) grant.
type rbacRule struct{ group, resource, name, verb string }

func grants(t *testing.T, o objects) map[string][]rbacRule {
	t.Helper()
	out := map[string][]rbacRule{}
	for key, v := range o {
		if !strings.HasPrefix(key, "ClusterRole/") && !strings.HasPrefix(key, "Role/") {
			continue
		}
		var rules []rbacRule
		for _, r := range at(v, "rules").([]interface{}) {
			names, _ := at(r, "resourceNames").([]interface{})
			if len(names) == 0 {
				names = []interface{}{""}
			}
			for _, g := range at(r, "apiGroups").([]interface{}) {
				for _, res := range at(r, "resources").([]interface{}) {
					for _, n := range names {
						for _, verb := range at(r, "verbs").([]interface{}) {
							rules = append(rules, rbacRule{g.(string), res.(string), n.(string), verb.(string)})
						}
					}
				}
			}
		}
		sort.Slice(rules, func(i, j int) bool { return fmt.Sprint(rules[i]) < fmt.Sprint(rules[j]) })
		out[key] = rules
	}
	return out
}

func TestRBACIsExactlyTheMinimalSet(t *testing.T) {
	o, _ := render(t)
	wantEqual(t, "grants", grants(t, o), map[string][]rbacRule{
		"ClusterRole/istio-cni": {
			{"", "namespaces", "", "get"}, {"", "namespaces", "", "list"}, {"", "namespaces", "", "watch"},
			{"", "nodes", "", "get"}, {"", "nodes", "", "list"}, {"", "nodes", "", "watch"},
			{"", "pods", "", "get"}, {"", "pods", "", "list"}, {"", "pods", "", "watch"},
		},
		"ClusterRole/istio-cni-ambient": {
			{"", "events", "", "create"},
			{"", "pods/status", "", "patch"},
			{"apps", "daemonsets", "istio-cni-node", "get"},
		},
	})
	for _, name := range []string{"istio-cni", "istio-cni-ambient"} {
		b := o.get(t, "ClusterRoleBinding/"+name)
		wantEqual(t, name+" roleRef", b["roleRef"], obj{
			"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name})
		wantEqual(t, name+" subjects", b["subjects"], []interface{}{
			obj{"kind": "ServiceAccount", "name": "istio-cni", "namespace": namespace}})
	}

	// OpenShift adds the privileged SCC, and nothing else.
	o, _ = render(t, "--set", "global.platform=openshift")
	g := grants(t, o)["ClusterRole/istio-cni"]
	wantEqual(t, "openshift extra grant", g[len(g)-1], rbacRule{"security.openshift.io", "securitycontextconstraints", "privileged", "use"})
	wantEqual(t, "openshift grant count", len(g), 10)
}

func TestOverridesReachTheObjects(t *testing.T) {
	vals := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vals, []byte(`
tolerations:
  - key: dedicated
    operator: Equal
    value: mesh
    effect: NoSchedule
resources:
  limits:
    memory: 200Mi
env:
  SYSTEM_NAMESPACE: "{{ .Release.Namespace }}"
  AMBIENT_ZDS_TIMEOUT_MS: 2000
`), 0o644); err != nil {
		t.Fatal(err)
	}
	o, _ := render(t, "--values", vals,
		"--set", "global.hub=registry.example/mesh,global.tag=1.2.3",
		"--set", "global.nativeNftables=true,priorityClassName=mesh-critical",
		"--set", "excludeNamespaces={kube-system,istio-system}",
		"--set", "cniConfFileName=10-calico.conflist,istioOwnedCNIConfig=true",
		"--set", "logging.level=debug,global.imagePullPolicy=Always",
		// istioctl's layout, including a false over a true default.
		"--set", "cni.ambient.dnsCapture=false,cni.cniNetnsDir=/var/run/docker/netns")

	c := container(t, o)
	wantEqual(t, "image", c["image"], "registry.example/mesh/ambient-cni:1.2.3")
	wantEqual(t, "imagePullPolicy", c["imagePullPolicy"], "Always")
	wantEqual(t, "args", c["args"], []interface{}{"--log_output_level=debug"})
	ps := podSpec(t, o)
	wantEqual(t, "priorityClassName", ps["priorityClassName"], "mesh-critical")
	wantEqual(t, "tolerations", ps["tolerations"], []interface{}{
		obj{"key": "dedicated", "operator": "Equal", "value": "mesh", "effect": "NoSchedule"}})
	// Helm coalesces maps: requests stay, limits are added.
	wantEqual(t, "resources", c["resources"], obj{
		"requests": obj{"cpu": "100m", "memory": "100Mi"}, "limits": obj{"memory": "200Mi"}})

	env := envOf(t, c)
	wantEqual(t, "env SYSTEM_NAMESPACE", env["SYSTEM_NAMESPACE"], namespace)
	wantEqual(t, "env AMBIENT_ZDS_TIMEOUT_MS", env["AMBIENT_ZDS_TIMEOUT_MS"], "2000")
	wantEqual(t, "netns mount", mounts(t, o)["/host/var/run/netns"].hostPath, "/var/run/docker/netns")

	data := configData(t, o)
	for k, v := range map[string]string{
		"NATIVE_NFTABLES":                 "true",
		"EXCLUDE_NAMESPACES":              "kube-system,istio-system",
		"CNI_CONF_NAME":                   "10-calico.conflist",
		"ISTIO_OWNED_CNI_CONFIG":          "true",
		"ISTIO_OWNED_CNI_CONFIG_FILENAME": "02-istio-cni.conflist",
		"AMBIENT_DNS_CAPTURE":             "false",
		"CURRENT_AGENT_VERSION":           "1.2.3",
		"SYSTEM_NAMESPACE":                namespace,
		"AMBIENT_ZDS_TIMEOUT_MS":          "2000",
	} {
		wantEqual(t, "ConfigMap "+k, data[k], v)
	}

	// Top-level hub/tag/variant win over global's; a "/" image is used as is.
	o, _ = render(t, "--set", "hub=other.example,tag=9,variant=debug")
	wantEqual(t, "image", container(t, o)["image"], "other.example/ambient-cni:9-debug")
	o, _ = render(t, "--set", "image=mirror.example/x/agent:v1")
	wantEqual(t, "image", container(t, o)["image"], "mirror.example/x/agent:v1")
}

func TestHostNetworkAndPlatformSwitches(t *testing.T) {
	o, _ := render(t, "--set", "ambient.shareHostNetworkNamespace=true")
	ps := podSpec(t, o)
	wantEqual(t, "hostNetwork", ps["hostNetwork"], true)
	wantEqual(t, "dnsPolicy", ps["dnsPolicy"], "ClusterFirstWithHostNet")
	if _, ok := envOf(t, container(t, o))["ALLOW_SWITCH_TO_HOST_NS"]; ok {
		t.Error("ALLOW_SWITCH_TO_HOST_NS set on hostNetwork")
	}

	// GKE keeps CNI binaries in /home/kubernetes/bin; an explicit cniBinDir wins.
	o, _ = render(t, "--kube-version", "v1.30.2-gke.1000")
	wantEqual(t, "GKE bin dir", mounts(t, o)["/host/opt/cni/bin"].hostPath, "/home/kubernetes/bin")
	o, _ = render(t, "--kube-version", "v1.30.2-gke.1000", "--set", "cniBinDir=/var/lib/cni/bin")
	wantEqual(t, "explicit bin dir", mounts(t, o)["/host/opt/cni/bin"].hostPath, "/var/lib/cni/bin")

	o, _ = render(t, "--set", "useAppArmorAnnotation=false,seLinuxOptions.level=s0")
	ann := at(o.get(t, "DaemonSet/istio-cni-node"), "spec", "template", "metadata", "annotations").(obj)
	if _, ok := ann["container.apparmor.security.beta.kubernetes.io/install-cni"]; ok {
		t.Error("AppArmor annotation still set with useAppArmorAnnotation=false")
	}
	sc := container(t, o)["securityContext"].(obj)
	wantEqual(t, "appArmorProfile", sc["appArmorProfile"], obj{"type": "Unconfined"})
	wantEqual(t, "seLinuxOptions", sc["seLinuxOptions"], obj{"level": "s0", "type": "spc_t"})
}

// docs/redirection.md#ebpf-choice: the switch reaches the agent; eBPF needs
// no capability beyond the others' (SYS_ADMIN covers loading the programs,
// docs/node-agent.md#capabilities).
func TestEbpfRedirectionSwitch(t *testing.T) {
	for _, v := range []string{"auto", "true"} {
		o, _ := render(t, "--set", "ambient.ebpfRedirection="+v)
		wantEqual(t, "ConfigMap AMBIENT_EBPF_REDIRECTION", configData(t, o)["AMBIENT_EBPF_REDIRECTION"], v)
		var caps []string
		for _, c := range at(container(t, o)["securityContext"].(obj), "capabilities", "add").([]interface{}) {
			caps = append(caps, c.(string))
		}
		sort.Strings(caps)
		wantEqual(t, "capabilities.add with eBPF "+v, caps,
			[]string{"DAC_OVERRIDE", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"})
		// The node's bpffs, where the pods' sk_lookup links are pinned
		// (docs/redirection.md#ebpf-time-wait).
		wantEqual(t, "/sys/fs/bpf with eBPF "+v, mounts(t, o)["/sys/fs/bpf"].hostPath, "/sys/fs/bpf")
	}
	o, _ := render(t)
	if _, ok := mounts(t, o)["/sys/fs/bpf"]; ok {
		t.Error("/sys/fs/bpf is mounted with ebpfRedirection=false")
	}
}

func TestRenderingFailsClearly(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"global.hub=", "global.hub (or hub) is required"},
		{"global.hub=null", "global.hub (or hub) is required"},
		{"global.tag=", "global.tag (or tag) is required"},
		{"ambient.enabled=false", "ambient.enabled=false is not supported"},
	} {
		out, stderr, err := runRender(t, "--set", tc.set)
		if err == nil {
			t.Errorf("--set %s rendered:\n%s", tc.set, out)
			continue
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("--set %s: stderr %q does not contain %q", tc.set, stderr, tc.want)
		}
		if out != "" {
			t.Errorf("--set %s: printed manifests although rendering failed", tc.set)
		}
	}
}

func keysOf(o objects) []string {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var defaultObjects = []string{
	"ClusterRole/istio-cni", "ClusterRole/istio-cni-ambient",
	"ClusterRoleBinding/istio-cni", "ClusterRoleBinding/istio-cni-ambient",
	"ConfigMap/istio-cni-config", "DaemonSet/istio-cni-node", "ServiceAccount/istio-cni",
}

// withObjects is defaultObjects plus extra, sorted.
func withObjects(extra ...string) []string {
	out := append(append([]string{}, defaultObjects...), extra...)
	sort.Strings(out)
	return out
}

// defaultEnv is the container env every platform and profile keeps.
var defaultEnv = map[string]string{
	"NODE_NAME":               "fieldRef:spec.nodeName",
	"POD_NAME":                "fieldRef:metadata.name",
	"POD_NAMESPACE":           "fieldRef:metadata.namespace",
	"AMBIENT_HOST_ROOT":       "/host",
	"ALLOW_SWITCH_TO_HOST_NS": "true",
}

const sccGrant = "security.openshift.io/securitycontextconstraints/privileged:use"

// Every platform upstream has a profile for: the host directories the
// DaemonSet mounts, the ConfigMap settings, the objects and grants it adds.
// The container paths, env and everything else stay as without a platform.
func TestPlatforms(t *testing.T) {
	for _, tc := range []struct {
		platform                  string
		kubeVersion               string
		binDir, confDir, netnsDir string
		chained                   string
		confName                  string // CNI_CONF_NAME; "" = not set
		objects                   []string
		scc                       bool
		seLinux                   interface{}
	}{
		{platform: "", binDir: "/opt/cni/bin", confDir: "/etc/cni/net.d", netnsDir: "/var/run/netns",
			chained: "true", objects: defaultObjects},
		{platform: "gke", binDir: "/home/kubernetes/bin", confDir: "/etc/cni/net.d", netnsDir: "/var/run/netns",
			chained: "true", objects: withObjects("ResourceQuota/istio-cni-resource-quota")},
		// On a real GKE cluster the version says so as well; same result.
		{platform: "gke", kubeVersion: "v1.31.1-gke.1678000", binDir: "/home/kubernetes/bin",
			confDir: "/etc/cni/net.d", netnsDir: "/var/run/netns",
			chained: "true", objects: withObjects("ResourceQuota/istio-cni-resource-quota")},
		{platform: "k3d", binDir: "/bin", confDir: "/var/lib/rancher/k3s/agent/etc/cni/net.d",
			netnsDir: "/var/run/netns", chained: "true", objects: defaultObjects},
		{platform: "k3s", binDir: "/var/lib/rancher/k3s/data/cni", confDir: "/var/lib/rancher/k3s/agent/etc/cni/net.d",
			netnsDir: "/var/run/netns", chained: "true", objects: defaultObjects},
		{platform: "microk8s", binDir: "/var/snap/microk8s/current/opt/cni/bin",
			confDir: "/var/snap/microk8s/current/args/cni-network", netnsDir: "/var/run/netns",
			chained: "true", objects: defaultObjects},
		{platform: "minikube", binDir: "/opt/cni/bin", confDir: "/etc/cni/net.d", netnsDir: "/var/run/docker/netns",
			chained: "true", objects: defaultObjects},
		{platform: "openshift", binDir: "/var/lib/cni/bin", confDir: "/etc/cni/multus/net.d", netnsDir: "/var/run/netns",
			chained: "false", confName: "istio-cni.conf",
			objects: withObjects("NetworkAttachmentDefinition/istio-cni"),
			scc:     true, seLinux: obj{"type": "spc_t"}},
	} {
		// Both spellings upstream reads; the top level is istioctl's
		// values.global.platform's chart-level twin.
		for _, key := range []string{"platform", "global.platform"} {
			name := fmt.Sprintf("%s=%s", key, tc.platform)
			t.Run(name, func(t *testing.T) {
				args := []string{"--set", name}
				if tc.kubeVersion != "" {
					args = append(args, "--kube-version", tc.kubeVersion)
				}
				o, notes := render(t, args...)
				wantEqual(t, "objects", keysOf(o), tc.objects)
				wantEqual(t, "mounts", mounts(t, o), map[string]mount{
					"/host/opt/cni/bin":   {hostPath: tc.binDir},
					"/host/proc":          {hostPath: "/proc", hostType: "Directory", readOnly: true},
					"/host/etc/cni/net.d": {hostPath: tc.confDir},
					"/var/run/istio-cni":  {hostPath: "/var/run/istio-cni"},
					"/host/var/run/netns": {hostPath: tc.netnsDir, hostType: "DirectoryOrCreate", propagation: "HostToContainer"},
					"/var/run/ztunnel":    {hostPath: "/var/run/ztunnel", hostType: "DirectoryOrCreate"},
				})
				c := container(t, o)
				wantEqual(t, "env", envOf(t, c), defaultEnv)
				wantEqual(t, "args", c["args"], []interface{}{"--log_output_level=info"})
				wantEqual(t, "seLinuxOptions", at(c, "securityContext", "seLinuxOptions"), tc.seLinux)
				wantEqual(t, "hostNetwork", podSpec(t, o)["hostNetwork"], nil)

				data := configData(t, o)
				wantEqual(t, "CHAINED_CNI_PLUGIN", data["CHAINED_CNI_PLUGIN"], tc.chained)
				confName, ok := data["CNI_CONF_NAME"]
				wantEqual(t, "CNI_CONF_NAME", confName, tc.confName)
				wantEqual(t, "CNI_CONF_NAME set", ok, tc.confName != "")
				wantEqual(t, "AMBIENT_ENABLED", data["AMBIENT_ENABLED"], "true")

				hasSCC := false
				for _, g := range grants(t, o)["ClusterRole/istio-cni"] {
					if g == (rbacRule{"security.openshift.io", "securitycontextconstraints", "privileged", "use"}) {
						hasSCC = true
					}
				}
				wantEqual(t, sccGrant, hasSCC, tc.scc)
				if tc.platform != "" && !strings.Contains(notes, "Platform: "+tc.platform+".") {
					t.Errorf("NOTES do not name the platform:\n%s", notes)
				}
			})
		}
	}
}

// What the user sets wins over the platform's presets, in either layout;
// the top-level platform wins over global.platform; unknown names fail.
func TestPlatformPrecedence(t *testing.T) {
	o, _ := render(t, "--set", "platform=k3s,cniBinDir=/custom/bin", "--set", "cni.cniConfDir=/custom/net.d")
	m := mounts(t, o)
	wantEqual(t, "bin dir", m["/host/opt/cni/bin"].hostPath, "/custom/bin")
	wantEqual(t, "conf dir", m["/host/etc/cni/net.d"].hostPath, "/custom/net.d")

	// A false the user sets beats the platform's and the chart's values alike.
	o, _ = render(t, "--set", "platform=openshift,chained=true,provider=default,resourceQuotas.enabled=true")
	wantEqual(t, "CHAINED_CNI_PLUGIN", configData(t, o)["CHAINED_CNI_PLUGIN"], "true")
	wantEqual(t, "objects", keysOf(o), withObjects("ResourceQuota/istio-cni-resource-quota"))
	o, _ = render(t, "--set", "platform=gke,resourceQuotas.enabled=false")
	wantEqual(t, "objects", keysOf(o), defaultObjects)

	o, _ = render(t, "--set", "platform=minikube,global.platform=k3s")
	m = mounts(t, o)
	wantEqual(t, "netns dir", m["/host/var/run/netns"].hostPath, "/var/run/docker/netns")
	wantEqual(t, "bin dir", m["/host/opt/cni/bin"].hostPath, "/opt/cni/bin")

	out, stderr, err := runRender(t, "--set", "global.platform=eks")
	if err == nil || !strings.Contains(stderr, `unknown platform "eks"`) || out != "" {
		t.Errorf("unknown platform: err %v, stderr %q, out %q", err, stderr, out)
	}
}

// Profiles are upstream's helm profiles: only demo and the compatibility
// versions up to 1.28 change this chart; the others are accepted and leave
// the output byte for byte as without them.
func TestProfiles(t *testing.T) {
	base, _, err := runRender(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []string{
		"profile=ambient", "profile=default", "profile=preview", "profile=remote", "profile=stable",
		"global.profile=ambient", "compatibilityVersion=1.29", "compatibilityVersion=1.30",
	} {
		out, stderr, err := runRender(t, "--set", set)
		if err != nil {
			t.Errorf("--set %s: %v\n%s", set, err, stderr)
		} else if out != base {
			t.Errorf("--set %s changed the output", set)
		}
	}

	o, _ := render(t, "--set", "profile=demo")
	wantEqual(t, "demo resources", container(t, o)["resources"], obj{"requests": obj{"cpu": "10m", "memory": "40Mi"}})
	// The user's values win over the profile's.
	o, _ = render(t, "--set", "global.profile=demo,resources.requests.cpu=250m")
	wantEqual(t, "demo resources", container(t, o)["resources"], obj{"requests": obj{"cpu": "250m", "memory": "40Mi"}})

	for _, tc := range []struct {
		version     string
		hostNetwork interface{}
	}{
		{"1.25", true}, {"1.26", nil}, {"1.27", nil}, {"1.28", nil},
	} {
		o, _ := render(t, "--set-string", "compatibilityVersion="+tc.version)
		wantEqual(t, tc.version+" reconcile", configData(t, o)["AMBIENT_RECONCILE_POD_RULES_ON_STARTUP"], "false")
		wantEqual(t, tc.version+" hostNetwork", podSpec(t, o)["hostNetwork"], tc.hostNetwork)
	}
	// Profile, compatibility version and platform stack; the user's value
	// still wins over all of them.
	o, _ = render(t, "--set", "profile=demo,compatibilityVersion=1.25,platform=k3s",
		"--set", "ambient.shareHostNetworkNamespace=false")
	wantEqual(t, "stacked resources", container(t, o)["resources"], obj{"requests": obj{"cpu": "10m", "memory": "40Mi"}})
	wantEqual(t, "stacked reconcile", configData(t, o)["AMBIENT_RECONCILE_POD_RULES_ON_STARTUP"], "false")
	wantEqual(t, "stacked hostNetwork", podSpec(t, o)["hostNetwork"], nil)
	wantEqual(t, "stacked bin dir", mounts(t, o)["/host/opt/cni/bin"].hostPath, "/var/lib/rancher/k3s/data/cni")

	for _, tc := range []struct{ set, want string }{
		{"profile=minimal", `unknown profile "minimal": the chart has no files/profile-minimal.yaml`},
		{"compatibilityVersion=1.20", `unknown compatibilityVersion "1.20"`},
		{"defaults.hub=x", "values set under defaults. found"},
	} {
		out, stderr, err := runRender(t, "--set", tc.set)
		if err == nil || !strings.Contains(stderr, tc.want) || out != "" {
			t.Errorf("--set %s: err %v, stderr %q (want %q), out %q", tc.set, err, stderr, tc.want, out)
		}
	}
}

func TestMultusNetworkAttachmentDefinition(t *testing.T) {
	o, _ := render(t, "--set", "provider=multus")
	wantEqual(t, "objects", keysOf(o), withObjects("NetworkAttachmentDefinition/istio-cni"))
	nad := o.get(t, "NetworkAttachmentDefinition/istio-cni")
	wantEqual(t, "apiVersion", nad["apiVersion"], "k8s.cni.cncf.io/v1")
	// Upstream's: in namespace default whatever the release namespace, and
	// empty (no spec.config): Multus finds the config file by its name.
	wantEqual(t, "namespace", at(nad, "metadata", "namespace"), "default")
	wantEqual(t, "spec", nad["spec"], nil)
	wantEqual(t, "component label", at(nad, "metadata", "labels", "operator.istio.io/component"), "Cni")
	// provider alone changes neither chaining nor paths.
	wantEqual(t, "CHAINED_CNI_PLUGIN", configData(t, o)["CHAINED_CNI_PLUGIN"], "true")
}

func TestResourceQuota(t *testing.T) {
	o, _ := render(t, "--set", "resourceQuotas.enabled=true,resourceQuotas.pods=100")
	wantEqual(t, "objects", keysOf(o), withObjects("ResourceQuota/istio-cni-resource-quota"))
	rq := o.get(t, "ResourceQuota/istio-cni-resource-quota")
	wantEqual(t, "apiVersion", rq["apiVersion"], "v1")
	wantEqual(t, "namespace", at(rq, "metadata", "namespace"), namespace)
	wantEqual(t, "spec", rq["spec"], obj{
		"hard": obj{"pods": "100"},
		"scopeSelector": obj{"matchExpressions": []interface{}{
			obj{"operator": "In", "scopeName": "PriorityClass", "values": []interface{}{"system-node-critical"}},
		}},
	})
	// The default pod count, and the DaemonSet's own priority class.
	o, _ = render(t, "--set", "resourceQuotas.enabled=true,priorityClassName=mesh-critical")
	rq = o.get(t, "ResourceQuota/istio-cni-resource-quota")
	wantEqual(t, "pods", at(rq, "spec", "hard", "pods"), "5000")
	wantEqual(t, "scope", at(rq, "spec", "scopeSelector", "matchExpressions", 0, "values"), []interface{}{"mesh-critical"})
}

func TestNetworkPolicy(t *testing.T) {
	o, _ := render(t, "--set", "global.networkPolicy.enabled=true")
	wantEqual(t, "objects", keysOf(o), withObjects("NetworkPolicy/istio-cni"))
	np := o.get(t, "NetworkPolicy/istio-cni")
	wantEqual(t, "apiVersion", np["apiVersion"], "networking.k8s.io/v1")
	wantEqual(t, "namespace", at(np, "metadata", "namespace"), namespace)
	wantEqual(t, "k8s-app label", at(np, "metadata", "labels", "k8s-app"), "istio-cni-node")
	wantEqual(t, "spec", np["spec"], obj{
		"podSelector": obj{"matchLabels": obj{"k8s-app": "istio-cni-node"}},
		"policyTypes": []interface{}{"Ingress", "Egress"},
		"ingress": []interface{}{
			obj{"ports": []interface{}{obj{"protocol": "TCP", "port": 15014}}},
			obj{"ports": []interface{}{obj{"protocol": "TCP", "port": 8000}}},
		},
		"egress": []interface{}{obj{}},
	})
	// The ports it opens are the ones the pod serves.
	c := container(t, o)
	wantEqual(t, "metrics port", at(c, "ports", 0, "containerPort"), 15014)
	wantEqual(t, "readiness port", at(c, "readinessProbe", "httpGet", "port"), 8000)

	o, _ = render(t, "--set", "global.networkPolicy.enabled=true,revision=canary")
	np = o.get(t, "NetworkPolicy/istio-cni-canary")
	wantEqual(t, "rev label", at(np, "metadata", "labels", "istio.io/rev"), "canary")
}

func TestLabelsOwnerAndLogging(t *testing.T) {
	o, _ := render(t, "--set", "ownerName=my-iop,daemonSetLabels.team=mesh,provider=multus",
		"--set", "resourceQuotas.enabled=true,global.networkPolicy.enabled=true,global.logAsJson=true")
	wantEqual(t, "objects", len(o), len(defaultObjects)+3)
	for k, v := range o {
		wantEqual(t, k+" owning-resource", at(v, "metadata", "labels", "install.operator.istio.io/owning-resource"), "my-iop")
	}
	ds := o.get(t, "DaemonSet/istio-cni-node")
	wantEqual(t, "DaemonSet label", at(ds, "metadata", "labels", "team"), "mesh")
	wantEqual(t, "DaemonSet k8s-app", at(ds, "metadata", "labels", "k8s-app"), "istio-cni-node")
	wantEqual(t, "pod label", at(ds, "spec", "template", "metadata", "labels", "team"), nil)
	wantEqual(t, "args", container(t, o)["args"], []interface{}{"--log_output_level=info", "--log_as_json"})

	o, _ = render(t)
	for k, v := range o {
		wantEqual(t, k+" owning-resource", at(v, "metadata", "labels", "install.operator.istio.io/owning-resource"), "unknown")
	}
}

func TestResources(t *testing.T) {
	// null falls back to global.defaultResources, as upstream.
	o, _ := render(t, "--set", "resources=null,global.defaultResources.limits.memory=1Gi")
	wantEqual(t, "default resources", container(t, o)["resources"], obj{
		"requests": obj{"cpu": "100m", "memory": "100Mi"}, "limits": obj{"memory": "1Gi"}})
	o, _ = render(t, "--set", "resources=null,global.defaultResources.requests.cpu=50m")
	wantEqual(t, "default resources", container(t, o)["resources"], obj{"requests": obj{"cpu": "50m", "memory": "100Mi"}})
	// Entries set to null are left out, and a section left empty too.
	o, _ = render(t, "--set", "resources.requests.cpu=null,resources.limits.cpu=")
	wantEqual(t, "resources", container(t, o)["resources"], obj{"requests": obj{"memory": "100Mi"}})
	o, _ = render(t, "--set", "resources.requests=null")
	wantEqual(t, "resources", container(t, o)["resources"], obj{})
}

func TestResourceScope(t *testing.T) {
	for _, tc := range []struct {
		scope string
		want  []string
	}{
		{"all", withObjects("NetworkPolicy/istio-cni", "NetworkAttachmentDefinition/istio-cni", "ResourceQuota/istio-cni-resource-quota")},
		{"cluster", []string{"ClusterRole/istio-cni", "ClusterRole/istio-cni-ambient",
			"ClusterRoleBinding/istio-cni", "ClusterRoleBinding/istio-cni-ambient"}},
		{"namespace", []string{"ConfigMap/istio-cni-config", "DaemonSet/istio-cni-node",
			"NetworkAttachmentDefinition/istio-cni", "NetworkPolicy/istio-cni",
			"ResourceQuota/istio-cni-resource-quota", "ServiceAccount/istio-cni"}},
	} {
		o, _ := render(t, "--set", "global.resourceScope="+tc.scope,
			"--set", "provider=multus,resourceQuotas.enabled=true,global.networkPolicy.enabled=true")
		wantEqual(t, tc.scope+" objects", keysOf(o), tc.want)
	}
	out, stderr, err := runRender(t, "--set", "global.resourceScope=some")
	if err == nil || !strings.Contains(stderr, `global.resourceScope "some"`) || out != "" {
		t.Errorf("bad resourceScope: err %v, stderr %q, out %q", err, stderr, out)
	}
}
