// Command cni-driver is a minimal CNI runtime used by the test suites.
//
// It deliberately drives plugins through the reference libcni instead of a
// home-grown invoker, so tests observe exactly what a real runtime
// (containerd, CRI-O) would feed a plugin chain: the injected name,
// cniVersion and prevResult, the result cache used by CHECK and DEL, and the
// CNI_* environment. Keep it to the standard library plus libcni, because it
// is built offline in GOPATH mode against Debian's golang-github-appc-cni-dev.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const (
	// Long enough for a slow CI box to run a whole chain, short enough that
	// a wedged plugin fails the test instead of hanging it.
	opTimeout = 60 * time.Second

	// Debian's containernetworking-plugins installs bridge, host-local, etc.
	// here, not in the upstream /opt/cni/bin.
	defaultBinDir = "/usr/lib/cni"

	exitOK = 0
	// Any failed operation. Tests read the JSON on stdout for the details.
	exitFailed = 1
	// Bad command line: nothing was run, so no JSON is printed.
	exitUsage = 2
	// The operation exists in the CNI spec but not in the libcni we were
	// built against; distinct so tests can skip rather than fail.
	exitUnsupported = 3
)

const usageText = `Usage:
  cni-driver <add|del|check|status|gc|version> --conflist FILE [options]
  cni-driver --help

Drives a CNI plugin chain (a .conflist) through the reference libcni, the
way a container runtime would.

Operations:
  add      libcni AddNetworkList. Prints the final result of the chain as
           JSON on stdout, in the version the chain returned (normally the
           conflist's cniVersion). Caches it for check/del.
           Needs --netns and --container-id.
  del      libcni DelNetworkList (plugins run in reverse order, with the
           cached ADD result as prevResult). Prints nothing on success.
           Needs --container-id; --netns may be omitted (the namespace may
           already be gone, as the CNI spec allows).
  check    libcni CheckNetworkList against the cached ADD result. Prints
           nothing on success. Needs --netns and --container-id.
  status   libcni GetStatusNetworkList (CNI 1.1 STATUS). The libcni this is
           built against may predate it (Debian bookworm ships 1.1.2, which
           lacks it); then it exits 3 with an "unsupported" JSON error.
  gc       CNI 1.1 GC. Not implemented: libcni 1.1.2 has no GCNetworkList.
           Always exits 3 with an "unsupported" JSON error.
  version  Runs VERSION on the first plugin of the conflist and prints its
           answer: {"cniVersion":"...","supportedVersions":[...]}

Options (accepted as -opt or --opt, "--opt value" or "--opt=value"):
  --conflist FILE          network configuration list (required)
  --netns PATH             network namespace path, e.g. /var/run/netns/NAME
  --container-id ID        container ID (CNI_CONTAINERID)
  --ifname NAME            interface inside the netns (default "eth0")
  --bin-dir DIR[:DIR...]   plugin search path, also passed as CNI_PATH
                           (default "/usr/lib/cni")
  --cache-dir DIR          libcni result cache (default: libcni's own,
                           /var/lib/cni); use one per test to isolate runs
  --args "K=V;K=V"         CNI_ARGS, split into RuntimeConf.Args pairs
  --capability-args JSON   JSON object for RuntimeConf.CapabilityArgs; only
                           keys a plugin declares in "capabilities" reach it
                           (as runtimeConfig)
  -h, --help               show this text

Every operation has a 60 s timeout.

Output and exit status:
  0  success; stdout holds the add result / version info, else nothing.
  1  failure; stdout holds exactly one JSON object
       {"code":N,"msg":"...","details":"..."}
     ("details" omitted when empty). When a plugin reported a CNI error,
     code/msg/details are the plugin's own; a plugin that died without
     JSON, or a libcni-side failure, gives code 0 and the message.
     stderr gets "cni-driver: <op> failed: <error with libcni context>".
  2  bad command line (message on stderr, no JSON).
  3  operation not supported by this libcni (JSON error as for 1).
A plugin's own stderr is copied to stderr only when it succeeds; when it
fails, libcni folds its stderr into "msg" only if it printed nothing on
stdout (code 0, msg "netplugin failed: \"...\""), else drops it.
`

// options holds the parsed command line.
type options struct {
	op             string
	conflist       string
	netns          string
	containerID    string
	ifname         string
	binDirs        []string
	cacheDir       string
	args           [][2]string
	capabilityArgs map[string]interface{}
}

// usageError marks command-line mistakes, which exit 2 without JSON so a
// test that miswires the driver does not mistake it for a plugin error.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// unsupportedError marks operations missing from the linked libcni.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	if len(argv) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	if isHelp(argv[0]) {
		fmt.Fprint(stdout, usageText)
		return exitOK
	}

	opts, err := parseArgs(argv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageText)
			return exitOK
		}
		fmt.Fprintf(stderr, "cni-driver: %v\n(run cni-driver --help for usage)\n", err)
		return exitUsage
	}

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	if err := execute(ctx, opts, stdout, stderr); err != nil {
		var uerr *usageError
		if errors.As(err, &uerr) {
			fmt.Fprintf(stderr, "cni-driver: %v\n(run cni-driver --help for usage)\n", err)
			return exitUsage
		}
		reportError(opts.op, err, stdout, stderr)
		var unsup *unsupportedError
		if errors.As(err, &unsup) {
			return exitUnsupported
		}
		return exitFailed
	}
	return exitOK
}

func isHelp(s string) bool {
	return s == "-h" || s == "--help" || s == "-help" || s == "help"
}

// parseArgs takes the operation as the first word, because Go's flag
// package stops at the first non-flag and runtimes think "verb first" too.
func parseArgs(argv []string) (*options, error) {
	opts := &options{op: argv[0]}
	switch opts.op {
	case "add", "del", "check", "status", "gc", "version":
	default:
		return nil, &usageError{fmt.Sprintf("unknown operation %q", opts.op)}
	}

	fs := flag.NewFlagSet("cni-driver", flag.ContinueOnError)
	// flag's own error text is printed by run(); silence its default dump.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var binDir, cniArgs, capArgs string
	fs.StringVar(&opts.conflist, "conflist", "", "")
	fs.StringVar(&opts.netns, "netns", "", "")
	fs.StringVar(&opts.containerID, "container-id", "", "")
	fs.StringVar(&opts.ifname, "ifname", "eth0", "")
	fs.StringVar(&binDir, "bin-dir", defaultBinDir, "")
	fs.StringVar(&opts.cacheDir, "cache-dir", "", "")
	fs.StringVar(&cniArgs, "args", "", "")
	fs.StringVar(&capArgs, "capability-args", "", "")
	if err := fs.Parse(argv[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}

	if opts.conflist == "" {
		return nil, &usageError{"--conflist is required"}
	}
	for _, d := range filepath.SplitList(binDir) {
		if d != "" {
			opts.binDirs = append(opts.binDirs, d)
		}
	}
	if len(opts.binDirs) == 0 {
		return nil, &usageError{"--bin-dir must name at least one directory"}
	}

	var err error
	if opts.args, err = parseCNIArgs(cniArgs); err != nil {
		return nil, &usageError{err.Error()}
	}
	if capArgs != "" {
		// Decoding into a map rejects arrays/scalars, which libcni could not
		// match against capability names anyway.
		if err := json.Unmarshal([]byte(capArgs), &opts.capabilityArgs); err != nil {
			return nil, &usageError{fmt.Sprintf("--capability-args is not a JSON object: %v", err)}
		}
	}

	// Checked here rather than left to libcni so a forgotten flag is a
	// usage error, not something a test could read as a plugin failure.
	needNetns := opts.op == "add" || opts.op == "check"
	needID := needNetns || opts.op == "del"
	if needNetns && opts.netns == "" {
		return nil, &usageError{fmt.Sprintf("%s needs --netns", opts.op)}
	}
	if needID && opts.containerID == "" {
		return nil, &usageError{fmt.Sprintf("%s needs --container-id", opts.op)}
	}
	return opts, nil
}

// parseCNIArgs splits "K=V;K=V" at the first '=' of each pair, since values
// (e.g. IP=10.0.0.1/24 or K8S_POD_NAME) may legitimately contain '='.
func parseCNIArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue // tolerate "K=V;" and an empty --args
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--args entry %q is not K=V", kv)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

func execute(ctx context.Context, opts *options, stdout, stderr io.Writer) error {
	list, err := libcni.ConfListFromFile(opts.conflist)
	if err != nil {
		return err
	}

	// An empty cacheDir makes libcni fall back to its package-level
	// default, which is what "no --cache-dir" should mean.
	cni := libcni.NewCNIConfigWithCacheDir(opts.binDirs, opts.cacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    opts.containerID,
		NetNS:          opts.netns,
		IfName:         opts.ifname,
		Args:           opts.args,
		CapabilityArgs: opts.capabilityArgs,
	}

	switch opts.op {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		// libcni returns the last plugin's result untouched. A conforming
		// plugin answers in the config's version already; converting only
		// on mismatch keeps its exact output otherwise.
		if list.CNIVersion != "" && result.Version() != list.CNIVersion {
			conv, cerr := result.GetAsVersion(list.CNIVersion)
			if cerr != nil {
				// ADD has already happened; failing now would leak the
				// attachment, so print what the plugin gave and warn.
				fmt.Fprintf(stderr, "cni-driver: warning: result version %s not convertible to %s: %v\n",
					result.Version(), list.CNIVersion, cerr)
			} else {
				result = conv
			}
		}
		return result.PrintTo(stdout)

	case "del":
		return cni.DelNetworkList(ctx, list, rt)

	case "check":
		return cni.CheckNetworkList(ctx, list, rt)

	case "status":
		// Asserted at run time rather than called directly so this file
		// still compiles against libcni 1.1.x, and status starts working
		// unchanged once Debian ships libcni >= 1.2.
		type statuser interface {
			GetStatusNetworkList(context.Context, *libcni.NetworkConfigList) error
		}
		s, ok := interface{}(cni).(statuser)
		if !ok {
			return &unsupportedError{"STATUS is not supported by this libcni (GetStatusNetworkList needs libcni >= 1.2.0)"}
		}
		return s.GetStatusNetworkList(ctx, list)

	case "gc":
		// GCNetworkList takes a *libcni.GCArgs that does not exist in 1.1.x,
		// so unlike status it cannot be probed without reflection.
		return &unsupportedError{"GC is not supported by this cni-driver/libcni (GCNetworkList needs libcni >= 1.2.0)"}

	case "version":
		info, err := cni.GetVersionInfo(ctx, list.Plugins[0].Network.Type)
		if err != nil {
			return err
		}
		return info.Encode(stdout)
	}
	return &usageError{fmt.Sprintf("unknown operation %q", opts.op)}
}

// reportError prints the machine-readable error on stdout and the human one
// on stderr. libcni wraps plugin errors with fmt.Errorf("%w") (e.g. "plugin
// type=\"bridge\" failed (add): ..."), so errors.As is needed to recover the
// plugin's *types.Error with its original code, msg and details.
func reportError(op string, err error, stdout, stderr io.Writer) {
	fmt.Fprintf(stderr, "cni-driver: %s failed: %v\n", op, err)

	out := &types.Error{Msg: err.Error()}
	var terr *types.Error
	if errors.As(err, &terr) {
		out = terr
	}
	// No HTML escaping: messages such as "needs libcni >= 1.2.0" should
	// stay greppable in test logs rather than turn into \u003e.
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	if eerr := enc.Encode(out); eerr != nil {
		fmt.Fprintf(stderr, "cni-driver: cannot write error JSON: %v\n", eerr)
	}
}
