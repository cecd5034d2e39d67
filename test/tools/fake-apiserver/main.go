// Command fake-apiserver is the stand-in for kube-apiserver in the
// end-to-end tests: one process, no etcd, no controllers, that speaks the
// real REST protocol (discovery, list, watch with resourceVersion replay,
// bookmarks and 410 Expired, create/update/patch/delete with Status errors)
// closely enough for both the node agent (libcurl + JSON) and a stock
// kubectl. Objects are kept as generic JSON so every field round-trips.
// It is standard library only because it is built offline in GOPATH mode.
package main

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usageText = `Usage: fake-apiserver [options]

A fake Kubernetes API server for tests. Serves core/v1 namespaces, nodes,
pods and apps/v1 daemonsets (each with a /status subresource) over HTTPS,
and optionally plain HTTP, from an in-memory store with a global,
etcd-like resourceVersion.

Options:
  --listen HOST:PORT        HTTPS address (default 127.0.0.1:0; with port 0
                            the chosen port is printed and put in the ready
                            file)
  --http-listen HOST:PORT   also serve plain HTTP here (default: off)
  --tls-dir DIR             where ca.crt, ca.key, server.crt, server.key
                            live; generated on first start (ECDSA P-256,
                            SANs 127.0.0.1, ::1, localhost, kubernetes,
                            kubernetes.default[.svc[.cluster.local]] and every
                            --san) and reused after (default: a new temp dir)
  --san NAME                extra server-certificate SAN (IP or DNS name);
                            repeatable
  --token T                 require "Authorization: Bearer T" on both
                            listeners (401 Status otherwise; /version,
                            /healthz, /livez and /readyz stay readable
                            without a header). Without it any or no token
                            is accepted
  --state FILE              load objects and the revision counter from FILE
                            at start, save after every write (tmp + rename).
                            The event log is not saved: after a restart a
                            watch from an older revision gets 410 Expired
  --ready-file PATH         once listening, write JSON
                            {"https":URL,"http":URL or "","ca":PATH,
                             "kubeconfig":PATH or "","token":T,"pid":N}
  --kubeconfig-out PATH     write a kubeconfig (server URL, CA data, token)
                            for kubectl
  --bookmark-interval D     period of BOOKMARK events on watches that set
                            allowWatchBookmarks=true (default 1s; 0 = only
                            when the watch times out)
  --event-log-size N        events kept for watch resumption; older ones are
                            compacted away (default 100000)
  --seed-namespaces LIST    namespaces created on a fresh start (default
                            default,kube-system,kube-public,kube-node-lease;
                            "" for none)
  --kube-version V          gitVersion reported by /version (default v1.32.4)
  --list-item-types         put kind/apiVersion on every LIST item. A real
                            apiserver leaves them out for built-in types,
                            so this is off by default
  --request-log-size N      requests kept for /fake/requests (default 1000)
  --disable-http2           HTTPS speaks HTTP/1.1 only (default: h2 via ALPN,
                            like kube-apiserver)
  -v, --verbose             log every request to stderr
  -h, --help                this text

API (what kubectl and client libraries use):
  GET  /version /healthz /livez /readyz
  GET  /api /api/v1 /apis /apis/apps /apis/apps/v1   legacy discovery,
       always Content-Type: application/json (aggregated discovery is
       declined, so clients fall back)
  GET  /openapi/v3, /openapi/v3/api/v1, /openapi/v3/apis/apps/v1   paths
       only, no schemas: enough for kubectl >= 1.29 to leave validation to
       the server, so create -f / apply work without --validate=false
       (older kubectl reads /openapi/v2, which is 404: pass
       --validate=false); kubectl explain has nothing to show
  /api/v1/namespaces[/NAME[/status]]
  /api/v1/nodes[/NAME[/status]]
  /api/v1/pods, /api/v1/namespaces/NS/pods[/NAME[/status]]
  /api/v1/events, /api/v1/namespaces/NS/events[/NAME]
  /apis/apps/v1/daemonsets, /apis/apps/v1/namespaces/NS/daemonsets[/NAME[/status]]
    collection: GET list, GET ?watch=true, POST create, DELETE deletecollection
    object:     GET, PUT, PATCH, DELETE;  /status: GET, PUT, PATCH
  LIST/WATCH take fieldSelector (metadata.name, metadata.namespace and the
  kind's real field labels, e.g. spec.nodeName; =, ==, !=) and labelSelector
  (=, ==, !=, in, notin, key, !key). WATCH takes resourceVersion ("" or "0":
  current objects as ADDED first; N: replay events after N, or one ERROR
  event with a 410 Expired Status if N is compacted), allowWatchBookmarks,
  timeoutSeconds and sendInitialEvents. PATCH takes
  application/merge-patch+json, application/json-patch+json and
  application/strategic-merge-patch+json (applied as a merge patch: lists
  are replaced, not merged by key). POST/PUT bodies: application/json (also
  assumed when Content-Type is missing), and application/vnd.kubernetes.
  protobuf for Namespace only (what kubectl create namespace sends).
  Writes to an object keep its status; writes to /status change only status
  and metadata. A write that changes nothing keeps the resourceVersion and
  emits no event. PUT/PATCH with a stale metadata.resourceVersion is a 409
  Conflict. LIST items carry no kind/apiVersion (see --list-item-types);
  GET, write responses and watch events do. Errors are metav1.Status bodies
  with the real reasons and codes (400, 401, 404, 405, 409, 410, 415, 422).

Deliberate differences from kube-apiserver: pod status given on create is
kept (so tests can seed pod IPs without a kubelet); deletion is immediate
(no grace period, finalizers ignored) and deleting a namespace deletes its
contents at once; no defaulting and no validation beyond names (a real
server rejects e.g. a pod without containers or a changed pod spec); no
server-side apply; no Table output (kubectl prints NAME and AGE columns);
responses are always JSON; a request without a valid token gets 401 where
a real server would treat a missing one as anonymous (403); limit/continue
are ignored (lists are always complete); a LIST or watch at a future
resourceVersion is served at once instead of waiting.

Objects get on create: metadata.uid (random UUID), creationTimestamp,
resourceVersion (one global counter, bumped by every write),
generation (daemonsets; bumped on spec changes); namespaces also get
status.phase Active, spec.finalizers [kubernetes] and the
kubernetes.io/metadata.name label; pods without status.phase get Pending.

Test control (on both listeners, no token needed, not logged, never
subject to injected failures):
  POST   /fake/compact          drop the event log: any watch from a revision
                                before now gets 410 Expired
  POST   /fake/close-watches    reset every open watch stream (no final
                                chunk), like a server crash
  POST   /fake/close-idle       close the idle keep-alive connections, as a
                                server or load balancer does after a while
  POST   /fake/fail?path=PREFIX&code=N&count=K[&method=M][&watch=true|false][&delay=MS][&drop=true]
                                the next K (default 1; -1 = until cleared)
                                requests whose path starts with PREFIX fail
                                with a Status of code N (default 500), after
                                MS milliseconds (default 0); code=0 with a
                                delay only slows them down; drop=true
                                instead closes the connection without an
                                answer (HTTP/2: resets the stream), and
                                code is not used
  GET    /fake/fail             the active rules;  DELETE /fake/fail clears
  GET    /fake/requests[?method=M&path=PREFIX&since=SEQ]
                                recent requests (not /fake/ ones), oldest
                                first: seq, time, method, path, query,
                                contentType, accept, userAgent, watch,
                                remote (client address:port), body
                                (exact text when there was one; bodyBase64
                                instead when it is not UTF-8), status
  DELETE /fake/requests         clear that log
  GET    /fake/state            current and compacted revision, open watches
`

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fake-apiserver: "+format+"\n", args...)
}

func main() {
	fs := flag.NewFlagSet("fake-apiserver", flag.ContinueOnError)
	// Parse reports a bad flag itself; the full text goes to stdout only
	// for --help.
	fs.Usage = func() {}
	var (
		listen       = fs.String("listen", "127.0.0.1:0", "")
		httpListen   = fs.String("http-listen", "", "")
		tlsDir       = fs.String("tls-dir", "", "")
		token        = fs.String("token", "", "")
		stateFile    = fs.String("state", "", "")
		readyFile    = fs.String("ready-file", "", "")
		kubeconfig   = fs.String("kubeconfig-out", "", "")
		bookmarkInt  = fs.Duration("bookmark-interval", time.Second, "")
		eventLogSize = fs.Int("event-log-size", 100000, "")
		seedNS       = fs.String("seed-namespaces", "default,kube-system,kube-public,kube-node-lease", "")
		kubeVersion  = fs.String("kube-version", "v1.32.4", "")
		listTypes    = fs.Bool("list-item-types", false, "")
		reqLogSize   = fs.Int("request-log-size", 1000, "")
		noH2         = fs.Bool("disable-http2", false, "")
		verbose      = fs.Bool("verbose", false, "")
		sans         stringList
	)
	fs.BoolVar(verbose, "v", false, "")
	fs.Var(&sans, "san", "")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			fmt.Print(usageText)
			os.Exit(0)
		}
		logf("see --help")
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		logf("unexpected argument %q (see --help)", fs.Arg(0))
		os.Exit(2)
	}
	if err := run(options{
		listen: *listen, httpListen: *httpListen, tlsDir: *tlsDir, token: *token,
		stateFile: *stateFile, readyFile: *readyFile, kubeconfig: *kubeconfig,
		bookmarkInterval: *bookmarkInt, eventLogSize: *eventLogSize, seedNS: *seedNS,
		kubeVersion: *kubeVersion, listItemTypes: *listTypes, reqLogSize: *reqLogSize,
		noH2: *noH2, verbose: *verbose, sans: sans,
	}); err != nil {
		logf("%v", err)
		os.Exit(1)
	}
}

type options struct {
	listen, httpListen, tlsDir, token, stateFile, readyFile, kubeconfig string
	bookmarkInterval                                                    time.Duration
	eventLogSize, reqLogSize                                            int
	seedNS, kubeVersion                                                 string
	listItemTypes, noH2, verbose                                        bool
	sans                                                                []string
}

func run(o options) error {
	st, err := newStore(o.stateFile, o.eventLogSize)
	if err != nil {
		return err
	}
	var seed []string
	for _, n := range strings.Split(o.seedNS, ",") {
		if n = strings.TrimSpace(n); n != "" {
			seed = append(seed, n)
		}
	}
	// Seeding only a fresh store: a restarted server must come back with
	// exactly the objects (and revision) it had.
	if o.stateFile == "" || !fileExists(o.stateFile) {
		st.seedNamespaces(seed)
		st.compact()
	}

	if o.tlsDir == "" {
		o.tlsDir, err = os.MkdirTemp("", "fake-apiserver-tls-")
		if err != nil {
			return err
		}
	}
	// Absolute, because the ready file and kubeconfig are read by tests
	// running in another directory.
	if o.tlsDir, err = filepath.Abs(o.tlsDir); err != nil {
		return err
	}
	files := newTLSFiles(o.tlsDir)
	cert, err := ensureTLS(files, o.sans)
	if err != nil {
		return fmt.Errorf("TLS setup in %s: %v", o.tlsDir, err)
	}

	srv := &server{
		store: st, token: o.token, bookmarkInterval: o.bookmarkInterval,
		listItemTypes: o.listItemTypes, kubeVersion: o.kubeVersion, verbose: o.verbose,
		reqlog: &requestLog{max: o.reqLogSize}, faults: &faults{},
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	httpsURL := "https://" + urlHost(ln.Addr())
	hs := &http.Server{Handler: srv}
	srv.closeIdle = func() {
		// Turning keep-alives off closes the idle connections; the one
		// asking stays, as it is busy.
		hs.SetKeepAlivesEnabled(false)
		hs.SetKeepAlivesEnabled(true)
	}
	hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if o.noH2 {
		hs.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	errc := make(chan error, 2)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()

	httpURL := ""
	if o.httpListen != "" {
		pln, err := net.Listen("tcp", o.httpListen)
		if err != nil {
			return err
		}
		httpURL = "http://" + urlHost(pln.Addr())
		go func() { errc <- (&http.Server{Handler: srv}).Serve(pln) }()
	}

	kubeToken := o.token
	if kubeToken == "" {
		kubeToken = "fake-token"
	}
	if o.kubeconfig != "" {
		if err := writeKubeconfig(o.kubeconfig, httpsURL, files.caCert, kubeToken); err != nil {
			return fmt.Errorf("writing kubeconfig: %v", err)
		}
	}
	fmt.Printf("fake-apiserver: serving %s\n", httpsURL)
	if httpURL != "" {
		fmt.Printf("fake-apiserver: serving %s\n", httpURL)
	}
	fmt.Printf("fake-apiserver: ca %s\n", files.caCert)
	if o.readyFile != "" {
		ready, _ := json.Marshal(map[string]any{
			"https": httpsURL, "http": httpURL, "ca": files.caCert,
			"kubeconfig": o.kubeconfig, "token": kubeToken, "pid": os.Getpid(),
		})
		if err := writeFileAtomic(o.readyFile, append(ready, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing ready file: %v", err)
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		logf("%v: exiting", s)
		return nil
	case err := <-errc:
		return err
	}
}

// urlHost names a listener in a URL; a wildcard bind is reached over
// loopback, the only address tests use.
func urlHost(a net.Addr) string {
	ta := a.(*net.TCPAddr)
	ip := ta.IP
	if ip.IsUnspecified() {
		if ip.To4() != nil {
			ip = net.IPv4(127, 0, 0, 1)
		} else {
			ip = net.IPv6loopback
		}
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(ta.Port))
}

func writeKubeconfig(path, server, caFile, token string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	// JSON strings are valid YAML scalars, which sidesteps YAML quoting.
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake-apiserver
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: fake-apiserver
  user:
    token: %s
contexts:
- name: fake-apiserver
  context:
    cluster: fake-apiserver
    user: fake-apiserver
    namespace: default
current-context: fake-apiserver
`, q(server), base64.StdEncoding.EncodeToString(ca), q(token))
	return writeFileAtomic(path, []byte(cfg), 0o600)
}
