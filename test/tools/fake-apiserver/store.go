package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"
)

// event is one committed write, kept in the log so watches can resume from
// a resourceVersion. Objects are never mutated once stored, so events share
// them with the store without copying.
type event struct {
	rv   int64
	typ  string // ADDED, MODIFIED, DELETED
	res  *resource
	ns   string
	obj  map[string]any // state after the write (for DELETED: the last state, at the deletion RV)
	prev map[string]any // state before a MODIFIED, for selector transitions
}

type watcher struct {
	id      int64
	res     *resource
	ns      string
	path    string
	query   string
	started time.Time
	ch      chan *event
	// done is closed when the server wants the stream gone: the watcher
	// fell too far behind, or /fake/close-watches was called.
	done     chan struct{}
	once     sync.Once
	abrupt   bool
	overflow bool
}

func (w *watcher) stop(abrupt bool) {
	w.once.Do(func() {
		w.abrupt = abrupt
		close(w.done)
	})
}

// watchBuffer bounds how far a watch may lag; past it the stream is ended
// like the real cacher ends a slow watcher, and the client re-watches.
const watchBuffer = 4096

type store struct {
	mu sync.Mutex
	// rv is the global revision, like etcd's: every write takes the next one.
	rv int64
	// compacted is the oldest RV a watch may resume from; events after it
	// are all in log.
	compacted int64
	objects   map[string]map[string]map[string]any // plural -> ns/name -> object
	log       []*event
	maxLog    int
	watchers  map[int64]*watcher
	nextWatch int64
	stateFile string
}

func newStore(stateFile string, maxLog int) (*store, error) {
	s := &store{
		rv:        1,
		objects:   map[string]map[string]map[string]any{},
		watchers:  map[int64]*watcher{},
		maxLog:    maxLog,
		stateFile: stateFile,
	}
	for _, r := range resources {
		s.objects[r.plural] = map[string]map[string]any{}
	}
	if stateFile != "" {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	// The event log is never persisted, so a restarted server cannot replay
	// anything before its current revision: resuming from an older RV must
	// get 410, as after a real apiserver restart plus compaction.
	s.compacted = s.rv
	return s, nil
}

type stateFile struct {
	ResourceVersion int64                       `json:"resourceVersion"`
	Objects         map[string][]map[string]any `json:"objects"`
}

func (s *store) load() error {
	data, err := os.ReadFile(s.stateFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	v, err := decodeJSON(data)
	if err != nil {
		return fmt.Errorf("state file %s: %v", s.stateFile, err)
	}
	// Re-marshal through the typed form; numbers inside objects stay
	// json.Number because v was decoded with UseNumber.
	top, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("state file %s: not a JSON object", s.stateFile)
	}
	rvNum, _ := top["resourceVersion"].(json.Number)
	rv, err := rvNum.Int64()
	if err != nil {
		return fmt.Errorf("state file %s: bad resourceVersion", s.stateFile)
	}
	s.rv = rv
	objs, _ := top["objects"].(map[string]any)
	for plural, list := range objs {
		if resourceByName(plural) == nil {
			continue
		}
		items, _ := list.([]any)
		for _, it := range items {
			o, ok := it.(map[string]any)
			if !ok {
				continue
			}
			s.objects[plural][key(metaString(o, "namespace"), metaString(o, "name"))] = o
		}
	}
	return nil
}

// persist writes the whole state through a temp file and rename so a test
// that kills the server mid-write still finds the previous complete state.
// Called with s.mu held.
func (s *store) persist() {
	if s.stateFile == "" {
		return
	}
	st := stateFile{ResourceVersion: s.rv, Objects: map[string][]map[string]any{}}
	for _, r := range resources {
		st.Objects[r.plural] = s.sortedLocked(r, "")
	}
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		logf("persist: %v", err)
		return
	}
	tmp := filepath.Join(filepath.Dir(s.stateFile), "."+filepath.Base(s.stateFile)+".tmp")
	f, err := os.Create(tmp)
	if err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, s.stateFile)
	}
	if err != nil {
		logf("persist %s: %v", s.stateFile, err)
	}
}

func key(ns, name string) string { return ns + "/" + name }

func meta(o map[string]any) map[string]any {
	m, _ := o["metadata"].(map[string]any)
	return m
}

func metaString(o map[string]any, field string) string {
	s, _ := meta(o)[field].(string)
	return s
}

func objRV(o map[string]any) int64 {
	n, _ := strconv.ParseInt(metaString(o, "resourceVersion"), 10, 64)
	return n
}

// withMeta returns a shallow copy of o whose metadata is a shallow copy with
// the given fields set; the original stays untouched.
func withMeta(o map[string]any, set map[string]any) map[string]any {
	out := make(map[string]any, len(o))
	for k, v := range o {
		out[k] = v
	}
	md := map[string]any{}
	for k, v := range meta(o) {
		md[k] = v
	}
	for k, v := range set {
		if v == nil {
			delete(md, k)
		} else {
			md[k] = v
		}
	}
	out["metadata"] = md
	return out
}

func (s *store) sortedLocked(r *resource, ns string) []map[string]any {
	var keys []string
	for k, o := range s.objects[r.plural] {
		if ns == "" || metaString(o, "namespace") == ns {
			keys = append(keys, k)
		}
	}
	// etcd returns a range in key order, /registry/<res>/<ns>/<name>.
	sort.Strings(keys)
	out := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.objects[r.plural][k])
	}
	return out
}

func (s *store) list(r *resource, ns string) ([]map[string]any, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedLocked(r, ns), s.rv
}

func (s *store) get(r *resource, ns, name string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[r.plural][key(ns, name)]
	return o, ok
}

func (s *store) currentRV() (rv, compacted int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rv, s.compacted
}

// commitLocked stores (or removes, for DELETED) obj at the next revision,
// logs the event and fans it out.
func (s *store) commitLocked(typ string, r *resource, obj, prev map[string]any) map[string]any {
	s.rv++
	obj = withMeta(obj, map[string]any{"resourceVersion": strconv.FormatInt(s.rv, 10)})
	ns, name := metaString(obj, "namespace"), metaString(obj, "name")
	if typ == "DELETED" {
		delete(s.objects[r.plural], key(ns, name))
	} else {
		s.objects[r.plural][key(ns, name)] = obj
	}
	ev := &event{rv: s.rv, typ: typ, res: r, ns: ns, obj: obj, prev: prev}
	s.log = append(s.log, ev)
	if s.maxLog > 0 && len(s.log) > s.maxLog {
		drop := len(s.log) - s.maxLog
		s.compacted = s.log[drop-1].rv
		s.log = append([]*event(nil), s.log[drop:]...)
	}
	for _, w := range s.watchers {
		if w.res != r || (w.ns != "" && w.ns != ns) {
			continue
		}
		select {
		case w.ch <- ev:
		default:
			w.overflow = true
			w.stop(false)
		}
	}
	return obj
}

func newUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func randomSuffix() string {
	// The alphabet apimachinery's rand.String uses: no vowels, no
	// look-alike digits, so generated names never spell words.
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

func nowTimestamp() string { return time.Now().UTC().Format(time.RFC3339) }

// create stores a new object. obj already has name/namespace resolved and
// validated by the handler, except generateName, which needs the lock.
func (s *store) create(r *resource, obj map[string]any, dryRun bool) (map[string]any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := metaString(obj, "namespace")
	if r.namespaced {
		if _, ok := s.objects["namespaces"][key("", ns)]; !ok {
			return nil, errNotFound(resourceByName("namespaces"), ns)
		}
	}
	name := metaString(obj, "name")
	set := map[string]any{}
	if name == "" {
		gen := metaString(obj, "generateName")
		for i := 0; ; i++ {
			name = gen + randomSuffix()
			if _, taken := s.objects[r.plural][key(ns, name)]; !taken || i > 8 {
				break
			}
		}
		set["name"] = name
	}
	if _, exists := s.objects[r.plural][key(ns, name)]; exists {
		return nil, errAlreadyExists(r, name)
	}
	set["uid"] = newUID()
	set["creationTimestamp"] = nowTimestamp()
	set["resourceVersion"] = nil
	if r.generation {
		set["generation"] = json.Number("1")
	}
	obj = withMeta(obj, set)
	if dryRun {
		return obj, nil
	}
	obj = s.commitLocked("ADDED", r, obj, nil)
	s.persist()
	return obj, nil
}

// update applies fn to the current object under the lock, so a PATCH is
// atomic against concurrent writers, and commits the result unless it is
// identical to what is stored: the real apiserver skips no-op writes
// without bumping the revision or emitting an event.
func (s *store) update(r *resource, ns, name string, dryRun bool,
	fn func(old map[string]any) (map[string]any, *apiError)) (map[string]any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.objects[r.plural][key(ns, name)]
	if !ok {
		return nil, errNotFound(r, name)
	}
	obj, aerr := fn(old)
	if aerr != nil {
		return nil, aerr
	}
	if jsonEqual(withMeta(obj, map[string]any{"resourceVersion": nil}),
		withMeta(old, map[string]any{"resourceVersion": nil})) {
		return old, nil
	}
	if r.generation && !jsonEqual(obj["spec"], old["spec"]) {
		g, _ := meta(old)["generation"].(json.Number)
		n, _ := g.Int64()
		obj = withMeta(obj, map[string]any{"generation": json.Number(strconv.FormatInt(n+1, 10))})
	}
	if dryRun {
		return withMeta(obj, map[string]any{"resourceVersion": metaString(old, "resourceVersion")}), nil
	}
	obj = s.commitLocked("MODIFIED", r, obj, old)
	s.persist()
	return obj, nil
}

type preconditions struct {
	uid, resourceVersion string
}

func (s *store) delete(r *resource, ns, name string, pre preconditions, dryRun bool) (map[string]any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.objects[r.plural][key(ns, name)]
	if !ok {
		return nil, errNotFound(r, name)
	}
	if pre.uid != "" && pre.uid != metaString(old, "uid") {
		return nil, errConflict(r, name, fmt.Sprintf("Precondition failed: UID in precondition: %s, UID in object meta: %s", pre.uid, metaString(old, "uid")))
	}
	if pre.resourceVersion != "" && pre.resourceVersion != metaString(old, "resourceVersion") {
		return nil, errConflict(r, name, fmt.Sprintf("Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", pre.resourceVersion, metaString(old, "resourceVersion")))
	}
	if dryRun {
		return old, nil
	}
	// Namespace deletion is asynchronous in a real cluster (the namespace
	// controller empties it); doing it inline gives watchers the same
	// DELETED events for the contents, just sooner.
	if r.plural == "namespaces" {
		for _, other := range resources {
			if !other.namespaced {
				continue
			}
			for _, o := range s.sortedLocked(other, name) {
				s.commitLocked("DELETED", other, o, nil)
			}
		}
	}
	obj := s.commitLocked("DELETED", r, old, nil)
	s.persist()
	return obj, nil
}

// compact forgets the event log, as etcd compaction plus a watch-cache
// window that has moved on would.
func (s *store) compact() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
	s.compacted = s.rv
	return s.rv
}

func (s *store) closeWatches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, w := range s.watchers {
		w.stop(true)
		n++
	}
	return n
}

type watchStart struct {
	w       *watcher
	initial []*event // synthetic ADDED or replayed log events, in order
	err     *apiError
}

// startWatch registers a watcher and, under the same lock, collects what it
// must see first, so no write can fall between the replay and the live feed.
// rv < 0 means "from now, with the current state as ADDED events".
func (s *store) startWatch(r *resource, ns string, rv int64, path, query string) watchStart {
	s.mu.Lock()
	defer s.mu.Unlock()
	var initial []*event
	if rv < 0 {
		for _, o := range s.sortedLocked(r, ns) {
			initial = append(initial, &event{rv: objRV(o), typ: "ADDED", res: r, ns: metaString(o, "namespace"), obj: o})
		}
	} else {
		if rv < s.compacted {
			return watchStart{err: errExpired(rv, s.compacted)}
		}
		for _, ev := range s.log {
			if ev.rv > rv && ev.res == r && (ns == "" || ev.ns == ns) {
				initial = append(initial, ev)
			}
		}
	}
	s.nextWatch++
	w := &watcher{id: s.nextWatch, res: r, ns: ns, path: path, query: query, started: time.Now(),
		ch: make(chan *event, watchBuffer), done: make(chan struct{})}
	s.watchers[w.id] = w
	return watchStart{w: w, initial: initial}
}

func (s *store) stopWatch(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.watchers, w.id)
}

// bookmarkPoint returns the current revision and how many events are
// queued for w at that revision. Delivering exactly those before a
// bookmark at rv keeps the bookmark from overtaking an undelivered event.
func (s *store) bookmarkPoint(w *watcher) (int64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rv, len(w.ch)
}

type watchInfo struct {
	ID      int64  `json:"id"`
	Path    string `json:"path"`
	Query   string `json:"query"`
	Started string `json:"started"`
}

func (s *store) watchList() []watchInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []watchInfo{}
	for _, w := range s.watchers {
		out = append(out, watchInfo{w.id, w.path, w.query, w.started.UTC().Format(time.RFC3339Nano)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *store) seedNamespaces(names []string) {
	for _, n := range names {
		if _, ok := s.get(resourceByName("namespaces"), "", n); ok {
			continue
		}
		obj := map[string]any{"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": n, "labels": map[string]any{"kubernetes.io/metadata.name": n}},
			"spec":     map[string]any{"finalizers": []any{"kubernetes"}},
			"status":   map[string]any{"phase": "Active"}}
		s.create(resourceByName("namespaces"), obj, false)
	}
}
