package main

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

type server struct {
	store            *store
	token            string
	bookmarkInterval time.Duration
	listItemTypes    bool
	kubeVersion      string
	verbose          bool
	reqlog           *requestLog
	faults           *faults
	// closeIdle closes the HTTPS listener's idle keep-alive connections.
	closeIdle func()
}

// Real apiservers cap request bodies at 3 MiB (etcd's limit plus slack).
const maxBody = 3 << 20

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/fake/") {
		s.serveControl(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, errBadRequest("reading request body: "+err.Error()))
		return
	}
	entry := s.reqlog.add(r, body)
	rec := &recorder{ResponseWriter: w, entry: entry, log: s.reqlog}
	if s.verbose {
		defer func() {
			logf("%s %s?%s -> %d", r.Method, r.URL.Path, r.URL.RawQuery, rec.code)
		}()
	}
	if aerr := s.authenticate(r); aerr != nil {
		writeError(rec, aerr)
		return
	}
	delay, drop, aerr := s.faults.check(r)
	if delay > 0 {
		time.Sleep(delay)
	}
	if drop { // logged with status 0: no answer
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		// HTTP/2 has no hijacking: abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	if aerr != nil {
		writeError(rec, aerr)
		return
	}
	if len(body) > maxBody {
		writeError(rec, &apiError{413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728", nil})
		return
	}
	s.route(rec, r, body)
}

// recorder notes the status code in the request log and keeps Flush
// reachable, which watch streaming needs through the wrapper.
type recorder struct {
	http.ResponseWriter
	entry *requestEntry
	log   *requestLog
	code  int
}

func (rw *recorder) WriteHeader(code int) {
	if rw.code == 0 {
		rw.code = code
		rw.log.setStatus(rw.entry, code)
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	if rw.code == 0 {
		rw.WriteHeader(200)
	}
	return rw.ResponseWriter.Write(b)
}

func (rw *recorder) Flush() {
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Paths the real apiserver lets anyone read (system:public-info-viewer).
var publicPaths = map[string]bool{"/version": true, "/healthz": true, "/livez": true, "/readyz": true}

func (s *server) authenticate(r *http.Request) *apiError {
	if s.token == "" {
		return nil
	}
	h := r.Header.Get("Authorization")
	if h == "" && publicPaths[r.URL.Path] {
		return nil
	}
	scheme, got, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.token)) != 1 {
		return &apiError{401, "Unauthorized", "Unauthorized", nil}
	}
	return nil
}

func (s *server) route(w http.ResponseWriter, r *http.Request, body []byte) {
	p := r.URL.Path
	switch p {
	case "/version":
		if r.Method != http.MethodGet {
			writeError(w, errMethodNotAllowed())
			return
		}
		writeJSON(w, 200, s.versionInfo())
		return
	case "/healthz", "/livez", "/readyz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		io.WriteString(w, "ok")
		return
	case "/api", "/apis", "/api/v1", "/apis/apps", "/apis/apps/v1":
		if r.Method != http.MethodGet {
			writeError(w, errMethodNotAllowed())
			return
		}
		// Always the legacy (unaggregated) documents with a plain
		// application/json type: client-go then falls back from
		// aggregated discovery and walks /api/v1 and /apis/<g>/<v>.
		writeJSON(w, 200, discovery(p, r.Host))
		return
	}
	if p == "/openapi/v3" || strings.HasPrefix(p, "/openapi/v3/") {
		doc, ok := openAPIV3(p, s.kubeVersion)
		if !ok || r.Method != http.MethodGet {
			writeError(w, errGenericNotFound())
			return
		}
		writeJSON(w, 200, doc)
		return
	}
	var gv string
	var rest []string
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	switch {
	case len(parts) >= 3 && parts[0] == "api" && parts[1] == "v1":
		gv, rest = "v1", parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		gv, rest = parts[1]+"/"+parts[2], parts[3:]
	default:
		writeError(w, errGenericNotFound())
		return
	}
	req, ok := parseResourcePath(gv, rest)
	if !ok {
		writeError(w, errGenericNotFound())
		return
	}
	s.serveResource(w, r, req, body)
}

type resourceRequest struct {
	res  *resource
	ns   string // "" for cluster-scoped or all-namespaces collections
	name string // "" for collections
	sub  string // "" or "status"
}

// parseResourcePath resolves the segments after the group/version prefix.
// /api/v1/namespaces/X is the namespace X itself unless a namespaced
// resource follows, the same ambiguity the real router resolves this way.
func parseResourcePath(gv string, seg []string) (resourceRequest, bool) {
	for _, s := range seg {
		if s == "" {
			return resourceRequest{}, false
		}
	}
	if len(seg) >= 3 && seg[0] == "namespaces" {
		if res := findResource(gv, seg[2]); res != nil && res.namespaced {
			req := resourceRequest{res: res, ns: seg[1]}
			switch len(seg) {
			case 3:
			case 4:
				req.name = seg[3]
			case 5:
				req.name, req.sub = seg[3], seg[4]
			default:
				return req, false
			}
			return req, req.sub == "" || req.sub == "status"
		}
	}
	res := findResource(gv, seg[0])
	if res == nil {
		return resourceRequest{}, false
	}
	req := resourceRequest{res: res}
	switch len(seg) {
	case 1:
	case 2:
		req.name = seg[1]
	case 3:
		req.name, req.sub = seg[1], seg[2]
	default:
		return req, false
	}
	// A namespaced object can only be addressed through its namespace.
	if res.namespaced && req.name != "" {
		return req, false
	}
	return req, req.sub == "" || req.sub == "status"
}

func (s *server) versionInfo() map[string]any {
	v := strings.TrimPrefix(s.kubeVersion, "v")
	major, minor := "1", "32"
	if f := strings.SplitN(v, ".", 3); len(f) >= 2 {
		major, minor = f[0], f[1]
	}
	return map[string]any{
		"major": major, "minor": minor, "gitVersion": s.kubeVersion,
		"gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
		"buildDate": "2025-01-01T00:00:00Z", "goVersion": runtime.Version(), "compiler": "gc",
		"platform": runtime.GOOS + "/" + runtime.GOARCH,
	}
}

func (s *server) serveResource(w http.ResponseWriter, r *http.Request, req resourceRequest, body []byte) {
	q := r.URL.Query()
	switch {
	case req.name == "":
		switch r.Method {
		case http.MethodGet:
			if isTrue(q.Get("watch")) {
				s.watch(w, r, req)
			} else {
				s.list(w, r, req)
			}
		case http.MethodPost:
			if req.res.namespaced && req.ns == "" {
				writeError(w, errMethodNotAllowed())
				return
			}
			s.create(w, r, req, body)
		case http.MethodDelete:
			if req.res.namespaced && req.ns == "" {
				writeError(w, errMethodNotAllowed())
				return
			}
			s.deleteCollection(w, r, req, body)
		default:
			writeError(w, errMethodNotAllowed())
		}
	default:
		switch r.Method {
		case http.MethodGet:
			o, ok := s.store.get(req.res, req.ns, req.name)
			if !ok {
				writeError(w, errNotFound(req.res, req.name))
				return
			}
			writeJSON(w, 200, o)
		case http.MethodPut:
			s.update(w, r, req, body)
		case http.MethodPatch:
			s.patch(w, r, req, body)
		case http.MethodDelete:
			if req.sub != "" {
				writeError(w, errMethodNotAllowed())
				return
			}
			s.delete(w, r, req, body)
		default:
			writeError(w, errMethodNotAllowed())
		}
	}
}

func isTrue(v string) bool {
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

type selectors struct {
	field fieldSelector
	label labelSelector
}

func (sel selectors) matches(o map[string]any) bool {
	return sel.field.matches(o) && sel.label.matches(o)
}

func parseSelectors(r *http.Request, req resourceRequest) (selectors, *apiError) {
	q := r.URL.Query()
	fs, err := parseFieldSelector(q.Get("fieldSelector"), req.res)
	if err != nil {
		return selectors{}, errBadRequest(err.Error())
	}
	ls, err := parseLabelSelector(q.Get("labelSelector"))
	if err != nil {
		return selectors{}, errBadRequest(err.Error())
	}
	return selectors{fs, ls}, nil
}

func (s *server) list(w http.ResponseWriter, r *http.Request, req resourceRequest) {
	sel, aerr := parseSelectors(r, req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	// resourceVersion / resourceVersionMatch / limit / continue are
	// accepted and ignored: the newest state satisfies "0", "" and
	// NotOlderThan, and a list without "continue" is a complete one.
	if rv := r.URL.Query().Get("resourceVersion"); rv != "" {
		if _, err := strconv.ParseUint(rv, 10, 64); err != nil {
			writeError(w, errInvalidRV(rv))
			return
		}
	}
	objs, rv := s.store.list(req.res, req.ns)
	items := make([]any, 0, len(objs))
	for _, o := range objs {
		if !sel.matches(o) {
			continue
		}
		if !s.listItemTypes {
			// Built-in list items come back without kind/apiVersion from a
			// real apiserver; clients must take them from the list.
			c := make(map[string]any, len(o))
			for k, v := range o {
				if k != "kind" && k != "apiVersion" {
					c[k] = v
				}
			}
			o = c
		}
		items = append(items, o)
	}
	writeJSON(w, 200, map[string]any{
		"kind":       req.res.listKind(),
		"apiVersion": req.res.apiVersion(),
		"metadata":   map[string]any{"resourceVersion": strconv.FormatInt(rv, 10)},
		"items":      items,
	})
}

func errInvalidRV(rv string) *apiError {
	return &apiError{400, "BadRequest", fmt.Sprintf("invalid resource version: %s", rv), nil}
}

// decodeBody reads a create/update body in the media types the real
// apiserver takes from clients that matter here: JSON, and protobuf as far
// as kubectl's typed clients use it.
func decodeBody(r *http.Request, body []byte, res *resource) (map[string]any, *apiError) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		// The real apiserver takes a body without a type as its first
		// serializer, JSON (kubectl create --raw relies on that).
		ct = "application/json"
	}
	mt, _, err := mime.ParseMediaType(ct)
	switch {
	case err == nil && mt == "application/json":
		return decodeObject(body, res)
	case err == nil && mt == protobufType:
		return decodeProtobufObject(body, res)
	}
	return nil, &apiError{415, "UnsupportedMediaType",
		fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (got %q)", r.Header.Get("Content-Type")), nil}
}

func decodeObject(body []byte, res *resource) (map[string]any, *apiError) {
	v, err := decodeJSON(body)
	if err != nil {
		return nil, errBadRequest(fmt.Sprintf("couldn't get version/kind; json parse error: %v", err))
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errBadRequest("couldn't get version/kind; json parse error: the body is not a JSON object")
	}
	return obj, checkTypeMeta(obj, res)
}

// checkTypeMeta accepts a missing kind/apiVersion (the endpoint implies
// them) but refuses a different one, as the real decoder does.
func checkTypeMeta(obj map[string]any, res *resource) *apiError {
	if av, ok := obj["apiVersion"]; ok {
		if s, _ := av.(string); s != res.apiVersion() {
			return errBadRequest(fmt.Sprintf("the API version in the data (%v) does not match the expected API version (%s)", av, res.apiVersion()))
		}
	}
	if k, ok := obj["kind"]; ok {
		if s, _ := k.(string); s != res.kind {
			return errBadRequest(fmt.Sprintf("the kind in the data (%v) does not match the expected kind (%s)", k, res.kind))
		}
	}
	if md, ok := obj["metadata"]; ok {
		if _, isObj := md.(map[string]any); !isObj && md != nil {
			return errBadRequest("couldn't get version/kind; json parse error: metadata must be an object")
		}
	}
	return nil
}

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

func validateName(res *resource, name string) *apiError {
	if res.plural == "namespaces" {
		if len(name) > 63 || !dns1123Label.MatchString(name) {
			return errInvalid(res, name, "metadata.name", "FieldValueInvalid",
				fmt.Sprintf("Invalid value: %q: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')", name))
		}
		return nil
	}
	if len(name) > 253 || !dns1123Subdomain.MatchString(name) {
		return errInvalid(res, name, "metadata.name", "FieldValueInvalid",
			fmt.Sprintf("Invalid value: %q: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')", name))
	}
	return nil
}

func dryRun(r *http.Request, body map[string]any) (bool, *apiError) {
	vals := r.URL.Query()["dryRun"]
	if body != nil {
		if list, ok := body["dryRun"].([]any); ok {
			for _, v := range list {
				s, _ := v.(string)
				vals = append(vals, s)
			}
		}
	}
	for _, v := range vals {
		if v != "All" {
			return false, errBadRequest(fmt.Sprintf("Invalid dry run value: %q, supported values: All", v))
		}
	}
	return len(vals) > 0, nil
}

func (s *server) create(w http.ResponseWriter, r *http.Request, req resourceRequest, body []byte) {
	if req.sub != "" {
		writeError(w, errMethodNotAllowed())
		return
	}
	obj, aerr := decodeBody(r, body, req.res)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	dry, aerr := dryRun(r, nil)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	obj = withMeta(obj, nil)
	obj["kind"], obj["apiVersion"] = req.res.kind, req.res.apiVersion()
	md := meta(obj)
	if req.res.namespaced {
		ns, _ := md["namespace"].(string)
		if ns != "" && ns != req.ns {
			writeError(w, errBadRequest("the namespace of the provided object does not match the namespace sent on the request"))
			return
		}
		md["namespace"] = req.ns
	} else {
		delete(md, "namespace")
	}
	name, _ := md["name"].(string)
	gen, _ := md["generateName"].(string)
	if name == "" && gen == "" {
		writeError(w, errInvalid(req.res, "", "metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
		return
	}
	if name != "" {
		if aerr := validateName(req.res, name); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	if rv, _ := md["resourceVersion"].(string); rv != "" {
		writeError(w, &apiError{500, "InternalError", "Internal error occurred: resourceVersion should not be set on objects to be created", nil})
		return
	}
	delete(md, "deletionTimestamp")
	delete(md, "deletionGracePeriodSeconds")
	dropEmptyMeta(md)
	applyCreateDefaults(req.res, obj)
	out, aerr := s.store.create(req.res, obj, dry)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, 201, out)
}

// applyCreateDefaults sets what the real registry strategies always set on
// create, so objects look the same as on a cluster. Pod status sent by the
// client is kept (a real apiserver would reset it): tests seed pod IPs that
// way instead of needing a kubelet.
func applyCreateDefaults(res *resource, obj map[string]any) {
	switch res.plural {
	case "namespaces":
		md := meta(obj)
		labels, _ := md["labels"].(map[string]any)
		l := map[string]any{}
		for k, v := range labels {
			l[k] = v
		}
		l["kubernetes.io/metadata.name"] = md["name"]
		if md["name"] == nil || md["name"] == "" {
			delete(l, "kubernetes.io/metadata.name")
		}
		md["labels"] = l
		spec, _ := obj["spec"].(map[string]any)
		if spec == nil || spec["finalizers"] == nil {
			obj["spec"] = mergePatch(spec, map[string]any{"finalizers": []any{"kubernetes"}})
		}
		obj["status"] = map[string]any{"phase": "Active"}
	case "pods":
		st, _ := obj["status"].(map[string]any)
		if st == nil || st["phase"] == nil {
			obj["status"] = mergePatch(st, map[string]any{"phase": "Pending"})
		}
	}
}

// finishUpdate turns a client-proposed new state into what the registry
// stores: system metadata comes from the old object, and a write to the
// main resource cannot change status while a write to /status can change
// only status and metadata (the pod/daemonset/node/namespace strategies).
func finishUpdate(req resourceRequest, old, proposed map[string]any) (map[string]any, *apiError) {
	if aerr := checkTypeMeta(proposed, req.res); aerr != nil {
		return nil, aerr
	}
	obj := withMeta(proposed, nil)
	obj["kind"], obj["apiVersion"] = req.res.kind, req.res.apiVersion()
	md := meta(obj)
	if name, _ := md["name"].(string); name != req.name {
		return nil, errBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", name, req.name))
	}
	if req.res.namespaced {
		if ns, _ := md["namespace"].(string); ns != "" && ns != req.ns {
			return nil, errBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		md["namespace"] = req.ns
	} else {
		delete(md, "namespace")
	}
	if rv, _ := md["resourceVersion"].(string); rv != "" && rv != metaString(old, "resourceVersion") {
		return nil, errConflict(req.res, req.name, "the object has been modified; please apply your changes to the latest version and try again")
	}
	if uid, _ := md["uid"].(string); uid != "" && uid != metaString(old, "uid") {
		return nil, errConflict(req.res, req.name, fmt.Sprintf("Precondition failed: UID in precondition: %s, UID in object meta: %s", uid, metaString(old, "uid")))
	}
	oldMD := meta(old)
	for _, f := range []string{"uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"} {
		if v, ok := oldMD[f]; ok {
			md[f] = v
		} else {
			delete(md, f)
		}
	}
	keep := "status"
	if req.sub == "status" {
		keep = "spec"
	}
	if v, ok := old[keep]; ok {
		obj[keep] = v
	} else {
		delete(obj, keep)
	}
	if req.res.plural == "namespaces" {
		labels, _ := md["labels"].(map[string]any)
		l := map[string]any{}
		for k, v := range labels {
			l[k] = v
		}
		l["kubernetes.io/metadata.name"] = req.name
		md["labels"] = l
	}
	dropEmptyMeta(md)
	return obj, nil
}

// dropEmptyMeta removes empty collections from metadata: ObjectMeta's
// fields are omitempty, so a real apiserver never returns
// "annotations": {} after the last annotation is removed.
func dropEmptyMeta(md map[string]any) {
	for _, k := range []string{"labels", "annotations", "finalizers", "ownerReferences", "managedFields"} {
		switch v := md[k].(type) {
		case map[string]any:
			if len(v) == 0 {
				delete(md, k)
			}
		case []any:
			if len(v) == 0 {
				delete(md, k)
			}
		case nil:
			delete(md, k)
		}
	}
}

func (s *server) update(w http.ResponseWriter, r *http.Request, req resourceRequest, body []byte) {
	proposed, aerr := decodeBody(r, body, req.res)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	dry, aerr := dryRun(r, nil)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	out, aerr := s.store.update(req.res, req.ns, req.name, dry, func(old map[string]any) (map[string]any, *apiError) {
		return finishUpdate(req, old, proposed)
	})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, 200, out)
}

func (s *server) patch(w http.ResponseWriter, r *http.Request, req resourceRequest, body []byte) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var apply func(old, patch any) (any, error)
	switch mt {
	case "application/merge-patch+json":
		apply = func(old, patch any) (any, error) { return mergePatch(old, patch), nil }
	case "application/strategic-merge-patch+json":
		apply = func(old, patch any) (any, error) {
			if _, ok := patch.(map[string]any); !ok {
				return nil, &jsonPatchError{"strategic merge patch must be a JSON object"}
			}
			return strategicAsMerge(old, patch), nil
		}
	case "application/json-patch+json":
		apply = jsonPatch
	default:
		writeError(w, &apiError{415, "UnsupportedMediaType",
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got %q; server-side apply is not supported by fake-apiserver)", r.Header.Get("Content-Type")), nil})
		return
	}
	patch, err := decodeJSON(body)
	if err != nil {
		writeError(w, errBadRequest(fmt.Sprintf("error decoding patch: %v", err)))
		return
	}
	dry, aerr := dryRun(r, nil)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	out, aerr := s.store.update(req.res, req.ns, req.name, dry, func(old map[string]any) (map[string]any, *apiError) {
		patched, err := apply(deepCopy(old), patch)
		if err != nil {
			return nil, &apiError{422, "Invalid", err.Error(), nil}
		}
		obj, ok := patched.(map[string]any)
		if !ok {
			return nil, errBadRequest("the patch did not produce a JSON object")
		}
		return finishUpdate(req, old, obj)
	})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, 200, out)
}

func deleteOptions(r *http.Request, body []byte) (preconditions, bool, *apiError) {
	var pre preconditions
	var opts map[string]any
	if len(strings.TrimSpace(string(body))) > 0 {
		v, err := decodeJSON(body)
		if err != nil {
			return pre, false, errBadRequest(fmt.Sprintf("error decoding DeleteOptions: %v", err))
		}
		opts, _ = v.(map[string]any)
		if p, ok := opts["preconditions"].(map[string]any); ok {
			pre.uid, _ = p["uid"].(string)
			pre.resourceVersion, _ = p["resourceVersion"].(string)
		}
	}
	dry, aerr := dryRun(r, opts)
	return pre, dry, aerr
}

func (s *server) delete(w http.ResponseWriter, r *http.Request, req resourceRequest, body []byte) {
	pre, dry, aerr := deleteOptions(r, body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	out, aerr := s.store.delete(req.res, req.ns, req.name, pre, dry)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeDeleted(w, req.res, out)
}

// writeDeleted answers like the real registries: kinds with graceful
// deletion (pods, namespaces) return the object, the rest a Success Status.
func writeDeleted(w http.ResponseWriter, res *resource, obj map[string]any) {
	if res.plural == "pods" || res.plural == "namespaces" {
		writeJSON(w, 200, obj)
		return
	}
	d := details(res, metaString(obj, "name"))
	d["uid"] = metaString(obj, "uid")
	writeJSON(w, 200, map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Success", "details": d})
}

func (s *server) deleteCollection(w http.ResponseWriter, r *http.Request, req resourceRequest, body []byte) {
	sel, aerr := parseSelectors(r, req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	pre, dry, aerr := deleteOptions(r, body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	objs, _ := s.store.list(req.res, req.ns)
	items := []any{}
	for _, o := range objs {
		if !sel.matches(o) {
			continue
		}
		out, aerr := s.store.delete(req.res, metaString(o, "namespace"), metaString(o, "name"), pre, dry)
		if aerr != nil {
			if aerr.code == 404 {
				continue
			}
			writeError(w, aerr)
			return
		}
		items = append(items, out)
	}
	rv, _ := s.store.currentRV()
	writeJSON(w, 200, map[string]any{"kind": req.res.listKind(), "apiVersion": req.res.apiVersion(),
		"metadata": map[string]any{"resourceVersion": strconv.FormatInt(rv, 10)}, "items": items})
}

// watch streams events as newline-delimited JSON over a chunked response,
// flushing each one, as the real apiserver does for Accept: application/json.
func (s *server) watch(w http.ResponseWriter, r *http.Request, req resourceRequest) {
	sel, aerr := parseSelectors(r, req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	q := r.URL.Query()
	bookmarks := isTrue(q.Get("allowWatchBookmarks"))
	var timeout <-chan time.Time
	if ts := q.Get("timeoutSeconds"); ts != "" {
		n, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || n < 0 {
			writeError(w, errBadRequest(fmt.Sprintf("invalid timeoutSeconds %q", ts)))
			return
		}
		if n > 0 {
			t := time.NewTimer(time.Duration(n) * time.Second)
			defer t.Stop()
			timeout = t.C
		}
	}
	rvParam := q.Get("resourceVersion")
	from := int64(-1)
	if rvParam != "" && rvParam != "0" {
		n, err := strconv.ParseInt(rvParam, 10, 64)
		if err != nil || n < 0 {
			writeError(w, errInvalidRV(rvParam))
			return
		}
		from = n
	}
	// sendInitialEvents (the streaming-list protocol) means "state as
	// ADDED events, then a bookmark marking the end of it".
	initialEnd := isTrue(q.Get("sendInitialEvents"))
	if initialEnd {
		from = -1
	} else if v := q.Get("sendInitialEvents"); v != "" && from < 0 {
		// sendInitialEvents=false from "now": no synthetic ADDED events.
		from, _ = s.store.currentRV()
	}

	st := s.store.startWatch(req.res, req.ns, from, r.URL.Path, r.URL.RawQuery)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(200)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(typ string, obj map[string]any) bool {
		if err := enc.Encode(map[string]any{"type": typ, "object": obj}); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if st.err != nil {
		// A watch from a compacted revision is answered with 200 and a
		// single ERROR event carrying the 410 Status, then the stream ends.
		send("ERROR", st.err.status())
		return
	}
	wt := st.w
	defer s.store.stopWatch(wt)
	// Bookmarks must never go backwards, nor below where the client asked
	// to start.
	lastRV := from
	deliver := func(ev *event) bool {
		typ, obj := convertEvent(ev, sel)
		if typ == "" {
			return true
		}
		return send(typ, obj)
	}
	bookmark := func(annotate bool) bool {
		cur, queued := s.store.bookmarkPoint(wt)
		for i := 0; i < queued; i++ {
			if !deliver(<-wt.ch) {
				return false
			}
		}
		if cur < lastRV {
			cur = lastRV
		}
		lastRV = cur
		md := map[string]any{"resourceVersion": strconv.FormatInt(cur, 10)}
		if annotate {
			md["annotations"] = map[string]any{"k8s.io/initial-events-end": "true"}
		}
		return send("BOOKMARK", map[string]any{"kind": req.res.kind, "apiVersion": req.res.apiVersion(), "metadata": md})
	}
	for _, ev := range st.initial {
		if !deliver(ev) {
			return
		}
	}
	if initialEnd && bookmarks && !bookmark(true) {
		return
	}
	var tick <-chan time.Time
	if bookmarks && s.bookmarkInterval > 0 {
		t := time.NewTicker(s.bookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ev := <-wt.ch:
			if !deliver(ev) {
				return
			}
		case <-tick:
			if !bookmark(false) {
				return
			}
		case <-timeout:
			if bookmarks {
				bookmark(false)
			}
			return
		case <-wt.done:
			if wt.abrupt {
				// Reset the connection (HTTP/1.1) or stream (HTTP/2)
				// without a terminating chunk, like a crashed server.
				panic(http.ErrAbortHandler)
			}
			return
		case <-r.Context().Done():
			return
		}
	}
}

// convertEvent applies the watch's selectors the way the watch cache does:
// an object that starts matching is ADDED, one that stops matching is
// DELETED (previous content, new resourceVersion).
func convertEvent(ev *event, sel selectors) (string, map[string]any) {
	cur := sel.matches(ev.obj)
	switch ev.typ {
	case "ADDED", "DELETED":
		if cur {
			return ev.typ, ev.obj
		}
	case "MODIFIED":
		old := ev.prev != nil && sel.matches(ev.prev)
		switch {
		case cur && old:
			return "MODIFIED", ev.obj
		case cur:
			return "ADDED", ev.obj
		case old:
			return "DELETED", withMeta(ev.prev, map[string]any{"resourceVersion": strconv.FormatInt(ev.rv, 10)})
		}
	}
	return "", nil
}
