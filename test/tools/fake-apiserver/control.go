package main

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Test-control endpoints live under /fake/, a prefix no real apiserver
// serves, so a client that strays there fails loudly against a cluster.
// They need no token: the harness drives them with plain curl.

type requestEntry struct {
	Seq         int64  `json:"seq"`
	Time        string `json:"time"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Query       string `json:"query"`
	ContentType string `json:"contentType,omitempty"`
	Accept      string `json:"accept,omitempty"`
	UserAgent   string `json:"userAgent,omitempty"`
	Watch       bool   `json:"watch"`
	// Remote is the client's address and port: one per connection, so a
	// test can tell which requests shared one.
	Remote string `json:"remote"`
	// Body is the exact request body, kept for every method that carries
	// one so tests can assert byte-for-byte what a client sent.
	Body *string `json:"body,omitempty"`
	// BodyBase64 replaces Body when the body is not UTF-8 (protobuf), so
	// the bytes survive JSON.
	BodyBase64 *string `json:"bodyBase64,omitempty"`
	Status     int     `json:"status"`
}

type requestLog struct {
	mu      sync.Mutex
	seq     int64
	max     int
	entries []*requestEntry
}

func (l *requestLog) add(r *http.Request, body []byte) *requestEntry {
	e := &requestEntry{
		Time:        time.Now().UTC().Format(time.RFC3339Nano),
		Method:      r.Method,
		Path:        r.URL.Path,
		Query:       r.URL.RawQuery,
		ContentType: r.Header.Get("Content-Type"),
		Accept:      r.Header.Get("Accept"),
		UserAgent:   r.Header.Get("User-Agent"),
		Watch:       isTrue(r.URL.Query().Get("watch")),
		Remote:      r.RemoteAddr,
	}
	if len(body) > 0 {
		if utf8.Valid(body) {
			b := string(body)
			e.Body = &b
		} else {
			b := base64.StdEncoding.EncodeToString(body)
			e.BodyBase64 = &b
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	e.Seq = l.seq
	l.entries = append(l.entries, e)
	if l.max > 0 && len(l.entries) > l.max {
		l.entries = append([]*requestEntry(nil), l.entries[len(l.entries)-l.max:]...)
	}
	return e
}

func (l *requestLog) setStatus(e *requestEntry, code int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Status = code
}

func (l *requestLog) query(method, pathPrefix string, since int64) []requestEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []requestEntry{}
	for _, e := range l.entries {
		if e.Seq <= since || (method != "" && !strings.EqualFold(method, e.Method)) ||
			!strings.HasPrefix(e.Path, pathPrefix) {
			continue
		}
		out = append(out, *e)
	}
	return out
}

func (l *requestLog) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = nil
}

type faultRule struct {
	Path    string `json:"path"`
	Method  string `json:"method,omitempty"`
	Watch   string `json:"watch,omitempty"` // "", "true" or "false"
	Code    int    `json:"code"`            // 0: no failure, only the delay
	DelayMs int    `json:"delayMs,omitempty"`
	// Drop closes the connection without an answer (after the delay), as
	// a server or load balancer does with one it has just given up on.
	Drop      bool `json:"drop,omitempty"`
	Remaining int  `json:"remaining"` // -1: until cleared
}

type faults struct {
	mu    sync.Mutex
	rules []*faultRule
}

// check finds the first rule for the request, uses up one of its
// remaining matches, and returns how long to hold the request, whether to
// drop its connection, and the failure to answer with (nil: serve it
// normally).
func (f *faults) check(r *http.Request) (time.Duration, bool, *apiError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	watch := isTrue(r.URL.Query().Get("watch"))
	for i, rule := range f.rules {
		if !strings.HasPrefix(r.URL.Path, rule.Path) ||
			(rule.Method != "" && !strings.EqualFold(rule.Method, r.Method)) ||
			(rule.Watch != "" && isTrue(rule.Watch) != watch) {
			continue
		}
		if rule.Remaining > 0 {
			rule.Remaining--
			if rule.Remaining == 0 {
				f.rules = append(f.rules[:i:i], f.rules[i+1:]...)
			}
		}
		delay := time.Duration(rule.DelayMs) * time.Millisecond
		if rule.Drop {
			return delay, true, nil
		}
		if rule.Code == 0 {
			return delay, false, nil
		}
		return delay, false, &apiError{rule.Code, reasonForCode(rule.Code),
			fmt.Sprintf("injected failure %d for %s (fake-apiserver /fake/fail)", rule.Code, rule.Path), nil}
	}
	return 0, false, nil
}

func (f *faults) list() []faultRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []faultRule{}
	for _, r := range f.rules {
		out = append(out, *r)
	}
	return out
}

func (s *server) serveControl(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	method := func(allowed ...string) bool {
		for _, m := range allowed {
			if r.Method == m {
				return true
			}
		}
		writeError(w, errMethodNotAllowed())
		return false
	}
	switch r.URL.Path {
	case "/fake/compact":
		if !method(http.MethodPost) {
			return
		}
		rv := s.store.compact()
		writeJSON(w, 200, map[string]any{"resourceVersion": strconv.FormatInt(rv, 10), "compacted": strconv.FormatInt(rv, 10)})
	case "/fake/close-watches":
		if !method(http.MethodPost) {
			return
		}
		writeJSON(w, 200, map[string]any{"closed": s.store.closeWatches()})
	case "/fake/close-idle":
		if !method(http.MethodPost) {
			return
		}
		if s.closeIdle != nil {
			s.closeIdle()
		}
		writeJSON(w, 200, map[string]any{"closed": s.closeIdle != nil})
	case "/fake/fail":
		if !method(http.MethodGet, http.MethodPost, http.MethodDelete) {
			return
		}
		switch r.Method {
		case http.MethodPost:
			rule := &faultRule{Path: q.Get("path"), Method: q.Get("method"), Watch: q.Get("watch"), Code: 500, Remaining: 1}
			if rule.Path == "" || !strings.HasPrefix(rule.Path, "/") {
				writeError(w, errBadRequest("path=<prefix starting with /> is required"))
				return
			}
			if c := q.Get("code"); c != "" {
				n, err := strconv.Atoi(c)
				if err != nil || (n != 0 && (n < 100 || n > 599)) {
					writeError(w, errBadRequest("code must be an HTTP status code, or 0 for a delay only"))
					return
				}
				rule.Code = n
			}
			if d := q.Get("drop"); d != "" {
				if d != "true" && d != "false" {
					writeError(w, errBadRequest("drop must be true or false"))
					return
				}
				rule.Drop = d == "true"
			}
			if d := q.Get("delay"); d != "" {
				n, err := strconv.Atoi(d)
				if err != nil || n < 0 || n > 60000 {
					writeError(w, errBadRequest("delay must be milliseconds, 0 to 60000"))
					return
				}
				rule.DelayMs = n
			}
			if rule.Code == 0 && rule.DelayMs == 0 && !rule.Drop {
				writeError(w, errBadRequest("code=0 needs a delay or drop=true"))
				return
			}
			if c := q.Get("count"); c != "" {
				n, err := strconv.Atoi(c)
				if err != nil || n == 0 || n < -1 {
					writeError(w, errBadRequest("count must be a positive number, or -1 for until cleared"))
					return
				}
				rule.Remaining = n
			}
			if rule.Watch != "" && rule.Watch != "true" && rule.Watch != "false" {
				writeError(w, errBadRequest("watch must be true or false"))
				return
			}
			s.faults.mu.Lock()
			s.faults.rules = append(s.faults.rules, rule)
			s.faults.mu.Unlock()
		case http.MethodDelete:
			s.faults.mu.Lock()
			s.faults.rules = nil
			s.faults.mu.Unlock()
		}
		writeJSON(w, 200, map[string]any{"rules": s.faults.list()})
	case "/fake/requests":
		if !method(http.MethodGet, http.MethodDelete) {
			return
		}
		if r.Method == http.MethodDelete {
			s.reqlog.clear()
			writeJSON(w, 200, map[string]any{"requests": []any{}})
			return
		}
		since, _ := strconv.ParseInt(q.Get("since"), 10, 64)
		writeJSON(w, 200, map[string]any{"requests": s.reqlog.query(q.Get("method"), q.Get("path"), since)})
	case "/fake/state":
		if !method(http.MethodGet) {
			return
		}
		rv, compacted := s.store.currentRV()
		writeJSON(w, 200, map[string]any{
			"resourceVersion": strconv.FormatInt(rv, 10),
			"compacted":       strconv.FormatInt(compacted, 10),
			"watches":         s.store.watchList(),
		})
	default:
		writeError(w, errGenericNotFound())
	}
}
