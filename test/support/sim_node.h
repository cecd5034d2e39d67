// A simulated Kubernetes node for end-to-end tests: a network namespace
// that plays the host (so nothing touches the real host's network), the
// reference CNI chain (libcni driver + bridge + host-local + istio-cni),
// the real agent and the ztunnel emulator. Pods are network namespaces
// created by the test. By default the agent runs as the chart deploys it
// (ambient.shareHostNetworkNamespace=false): in a netns of its own, joined
// to the node by a veth, given the node's netns as the host netns
// (docs/redirection.md#host-side-kubelet-probe-snat). Everything is named with a per-run
// suffix and torn down by the destructor, also when a test fails.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent_client.h"
#include "k8s/kube_client.h"
#include "lib/result.h"
#include "lib/unique_fd.h"
#include "netns/netns.h"
#include "nlohmann/json.hpp"
#include "support/backends.h"
#include "support/bpffs.h"
#include "support/wait.h"

namespace ambient::cri {
struct PodSandboxSpec;
}

namespace ambient::test {

class TestNetns;
class Containerd;

// A program built with the suite (AMBIENT_BIN_DIR): istio-cni,
// ambient-agent, ztunnel-emulator, cni-driver, fake-apiserver, ...
std::string bin_path(const std::string& name);

// A background process owned by the test: SIGTERM, then SIGKILL, then reaped.
class BgProcess {
 public:
  BgProcess(std::vector<std::string> argv, const std::string& log_path);
  ~BgProcess();
  BgProcess(const BgProcess&) = delete;
  BgProcess& operator=(const BgProcess&) = delete;
  void stop();
  bool running();
  std::optional<int> wait(std::chrono::milliseconds timeout);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

struct Pod {
  // container_id is the sandbox's (CNI_CONTAINERID); with containerd, the
  // runtime's sandbox ID.
  std::string name, ns, uid, netns_name, netns_path, container_id;
  uint32_t attempt = 0;  // the pod's sandbox count, as kubelet passes it
  std::string ip;        // from the CNI result
  std::string ip6;       // dual-stack only
};

// What a Kubernetes pod object should look like for a test.
struct PodSpec {
  nlohmann::json labels = nlohmann::json::object();
  nlohmann::json annotations = nlohmann::json::object();
  bool host_network = false;
  bool disable_ipv6 = false;  // net.ipv6.conf.all.disable_ipv6=1 in the pod before ADD
  // lo still down at ADD: containerd runs the loopback plugin alongside the
  // chain, not before it.
  bool lo_down = false;
  // Runs once the pod object and its netns exist, right before CNI ADD
  // (e.g. to take the API server down under the plugin).
  std::function<void()> before_add;
};

struct AddResult {
  bool ok = false;
  nlohmann::json output;  // the CNI result, or the error object
  std::string stderr_text;
};

// The primary CNI's shape: how pods are wired to the node.
enum class PrimaryCni {
  Bridge,  // an L2 bridge, the node its gateway (kindnet, flannel)
  Ptp,     // a veth per pod with /32 routes through the node (Calico, Cilium)
  // Pods on the node's own interface. macvlan, as ipvlan is not in every
  // kernel (docs/architecture.md#testing).
  Macvlan,
  BridgeChain,  // bridge with portmap, tuning and bandwidth chained before us
};

struct NodeOptions {
  std::vector<std::string> enroll_namespaces = {"ambient-demo"};
  std::vector<std::string> exclude_namespaces = {"kube-system"};
  bool dns_capture = true;
  bool start_ztunnel = true;
  // ztunnel's ENABLE_ORIG_SRC: false gives listeners without IP_TRANSPARENT.
  bool ztunnel_orig_src = true;
  // One of kBackends.
  std::string backend = kIptablesNft;
  // With backend kEbpf, the host side's netfilter backend: kIptablesNft
  // (forced, as a node with iptables-nft binaries detects) or kNftables.
  std::string ebpf_host_side = kIptablesNft;
  // Pods get IPv6 addresses too (host-local ranges for both families) and
  // the agent installs IPv6 rules.
  bool dual_stack = false;
  bool agent_ipv6 = false;  // --ambient-ipv6 without IPv6 pod addresses
  int kubelet_uid = -1;     // --kubelet-uid: who plays kubelet in the node netns
  std::string crash_point;  // AMBIENT_CRASH_POINT_FOR_TEST for the agent
  // Run the agent's installer against a simulated host: <dir>/host/net.d
  // (with a bridge conflist), <dir>/host/bin, a service-account dir.
  bool installer = false;
  // Kubernetes mode: a fake API server in the node netns, the agent with
  // upstream's default selectors, pods as API objects with a sandbox
  // process in a pod cgroup (so the /proc scan can find them).
  bool kubernetes = false;
  // The fake API server keeps its objects in a state file, rewritten whole
  // on every write, so that a restarted server has them. Benchmarks that
  // never restart it turn that off: on a node of a few hundred pods each
  // PATCH would cost the stand-in more CPU than the enrollment it measures.
  bool apiserver_state = true;
  PrimaryCni primary = PrimaryCni::Bridge;
  // The agent shares the node's netns (hostNetwork) instead of running in
  // a pod netns of its own, the chart's default.
  bool agent_host_network = false;
  // Pods are made by containerd through CRI, as kubelet has them made
  // (docs/architecture.md#testing): the agent's installer writes our entry
  // into the node's conflist, containerd runs the chain in the node's
  // netns, and add_pod/del_pod become RunPodSandbox / Stop+RemovePodSandbox.
  // Implies `installer`.
  bool containerd = false;
  // Where the node's directory (agent run dir, sockets, logs, the
  // emulator's state file) is made. Benchmarks use tmpfs, as /var/run is
  // on a real node, so file I/O of the harness does not count as ours.
  std::string work_root = "/tmp";
  // The capabilities the agent runs with, by the chart's names
  // ("NET_ADMIN"): its bounding and permitted set, none inheritable, as a
  // container runtime starts the chart's container. Unset: the chart's set
  // for the backend (chart_capabilities), so every case shows that set is
  // enough; with AMBIENT_E2E_UNRESTRICTED_AGENT set in the environment,
  // every capability.
  std::optional<std::vector<std::string>> agent_capabilities;
  // RLIMIT_NOFILE of the agent, soft and hard, when > 0 (it raises the
  // soft limit to the hard one at start).
  int agent_nofile = 0;
  // The agent's run dir is a tmpfs of this size (e.g. "128k") when set, a
  // plain directory otherwise.
  std::string run_dir_tmpfs;
  // The constructor (and start_agent) waits until the agent serves and
  // fails the test if it does not; false: it only starts the agent, for
  // cases where it must not come up (start_ztunnel = false with it).
  bool wait_for_agent = true;
};

// The capabilities charts/ambient-cni/templates/daemonset.yaml grants the
// agent's container for `backend` (docs/node-agent.md#capabilities).
std::vector<std::string> chart_capabilities(const std::string& backend);

inline constexpr const char* kNodeName = "node-1";

// The namespace labels upstream's default selectors enroll.
inline const nlohmann::json kAmbientLabels = {{"istio.io/dataplane-mode", "ambient"}};

// A node in Kubernetes mode, otherwise the defaults.
inline NodeOptions kubernetes_node() {
  NodeOptions o;
  o.kubernetes = true;
  return o;
}

class SimNode {
 public:
  explicit SimNode(NodeOptions opts = {});
  ~SimNode();

  const std::string& id() const { return id_; }
  const std::string& dir() const { return dir_; }
  std::string node_netns() const { return "amb-" + id_ + "-node"; }
  // The agent's own netns (the node's, with agent_host_network).
  std::string agent_netns() const {
    return opts_.agent_host_network ? node_netns() : "amb-" + id_ + "-agent";
  }
  // The node's routable address (the API server listens there) and the
  // agent's (its health and metrics ports), as seen from the node netns.
  std::string node_ip() const { return "10.249.0.1"; }
  std::string agent_ip() const { return opts_.agent_host_network ? node_ip() : "10.249.0.2"; }
  std::string agent_socket() const { return dir_ + "/run/pluginevent.sock"; }
  std::string gateway() const { return "10.248.0.1"; }
  std::string gateway6() const { return "fd00:248::1"; }

  void start_agent();
  // Waits for the agent to exit (after an injected crash); its exit code.
  std::optional<int> wait_agent_exit(std::chrono::milliseconds timeout);
  void set_crash_point(std::string p) { opts_.crash_point = std::move(p); }
  bool agent_running() { return agent_ && agent_->running(); }
  pid_t agent_pid() const { return agent_ ? agent_->pid() : -1; }
  pid_t ztunnel_pid() const { return ztunnel_ ? ztunnel_->pid() : -1; }
  pid_t apiserver_pid() const { return apiserver_ ? apiserver_->pid() : -1; }
  void stop_agent();
  void start_ztunnel();
  void stop_ztunnel();
  // Waits until the emulator has taken the snapshot (state file).
  void wait_ztunnel_ready();

  // Kubernetes mode: the API server, reached from inside the node netns.
  Result<k8s::HttpResult> api(const std::string& method, const std::string& path,
                              const std::string& body = "",
                              const std::string& content_type = "application/json");
  // The same from a client of its own, which shares no kept connection
  // with api()'s.
  Result<k8s::HttpResult> api_from_another_client(const std::string& method,
                                                  const std::string& path);
  nlohmann::json api_json(const std::string& method, const std::string& path,
                          const std::string& body = "",
                          const std::string& content_type = "application/json");
  void create_namespace(const std::string& name, nlohmann::json labels = nlohmann::json::object());
  void label_namespace(const std::string& name, const std::string& key,
                       std::optional<std::string> value);
  void start_apiserver();
  // What makes an agent's shutdown an upgrade (its state stays): the node,
  // and the agent's DaemonSet (istio-cni-node in istio-system). `pod_spec`
  // is merged into the DaemonSet's pod template spec (node selector,
  // affinity).
  void create_agent_daemonset(const nlohmann::json& pod_spec = nlohmann::json::object());
  // Kills a pod's sandbox process: the netns stays (bind-mounted), but the
  // /proc scan can no longer find it.
  void kill_sandbox(const Pod& p);
  void stop_apiserver();
  // The agent's and the test's credentials (in a cluster: the service account).
  std::string kubeconfig() const { return dir_ + "/admin-kubeconfig"; }
  // The plugin's, as the installer writes it.
  std::string plugin_kubeconfig() const { return dir_ + "/run/istio-cni-kubeconfig"; }

  // Creates the pod netns and runs CNI ADD through the chain (in Kubernetes
  // mode: the pod object first, its status with the IP after, like kubelet).
  AddResult add_pod(const std::string& name, const std::string& ns, Pod* out,
                    const PodSpec& spec = {});
  Pod must_add_pod(const std::string& name, const std::string& ns, const PodSpec& spec = {});
  AddResult del_pod(const Pod& p);
  // Forgets a pod after its DEL: its netns is deleted now, not at teardown,
  // and teardown sends it no DEL (churn: hundreds of pods come and go).
  void forget_pod(const Pod& p);
  // The bpffs where the agent pins links (eBPF backend); empty otherwise.
  std::string bpf_pin_dir() const { return bpffs_ ? bpffs_->path() : std::string(); }
  // The runtime recreates the pod's sandbox: same pod (name, UID), a new
  // netns and container ID, and CNI ADD for it. The old sandbox stays until
  // the test sends its DEL.
  AddResult recreate_sandbox(const Pod& old, Pod* out, const PodSpec& spec = {});

  // add_pod in three steps, for many ADDs at once (storms): the pod's
  // object, netns and sandbox; CNI ADD or DEL, which touches nothing of
  // the SimNode and asserts nothing, so any thread may run it; and, after
  // a successful ADD, the pod's IPs taken and reported as kubelet does.
  Pod prepare_pod(const std::string& name, const std::string& ns, const PodSpec& spec = {});
  AddResult cni_command(const std::string& op, const Pod& p) const;
  void pod_started(Pod& p, const AddResult& res);

  // containerd mode: the runtime, a busybox container in a pod (`sleep`
  // forever; its ID), and a command run in a container (its stdout and exit
  // code; fails the test only when the runtime cannot run it).
  Containerd& containerd();
  std::string start_container(const Pod& p, const std::string& name = "app");
  std::pair<int, std::string> container_exec(const std::string& container_id,
                                             const std::vector<std::string>& argv);
  // The node's conflist as the runtime reads it (with the installer: the one
  // it extended), and the same rewritten in place.
  std::string conflist_path() const;
  void rewrite_conflist(const std::function<void(nlohmann::json&)>& edit);
  // StopPodSandbox, then RemovePodSandbox (what kubelet does on pod
  // deletion): each CNI DEL's outcome, as the runtime reported it.
  AddResult stop_sandbox(const Pod& p);
  AddResult remove_sandbox(const Pod& p);

  // Runs `argv` inside the node netns; returns stdout, fails the test on error.
  std::string node_exec(const std::vector<std::string>& argv);
  // The same inside a pod's netns.
  std::string pod_exec(const Pod& p, const std::vector<std::string>& argv);
  // GET `path` from the agent's address on `port` (8000 readiness, 15014
  // metrics), from inside the node netns as kubelet and Prometheus reach
  // it: the whole HTTP/1.0 response.
  std::string node_http_get(int port, const std::string& path);
  // Whole iptables-save text of a pod, and whether it holds any of our state.
  std::string pod_iptables(const Pod& p);
  bool pod_has_our_rules(const Pod& p);
  // Every tc filter in a pod's netns, by interface and hook, with program
  // ids written "N" so that two pods or two agent processes compare equal.
  std::string pod_filters(const Pod& p);
  // Everything of ours in a pod (nftables and iptables-legacy rules, ip
  // rules, table 100, tc filters) as text two pods with the same
  // redirection share: no counters, no comments, chains in name order.
  std::string pod_redirection(const Pod& p);

  // The emulator's records and state, and whether it serves a pod.
  std::vector<nlohmann::json> records();
  nlohmann::json ztunnel_state();
  bool ztunnel_has(const Pod& p);
  // Kubernetes mode: the pod's ambient.istio.io/redirection annotation, ""
  // when it has none.
  std::string redirection_annotation(const Pod& p);
  std::string agent_log();

 private:
  AddResult run_sandbox(Pod p, const PodSpec& spec, Pod* out);
  Pod new_pod(const std::string& name, const std::string& ns, const PodSpec& spec);
  void make_sandbox(const Pod& p, const PodSpec& spec);
  std::vector<std::string> cni_argv(const std::string& op, const Pod& p) const;
  const TestNetns& netns_named(const std::string& name) const;
  void start_sandbox(const Pod& p);
  void make_node_network();
  std::vector<std::string> agent_argv();
  nlohmann::json primary_plugins();
  void start_containerd();
  AddResult run_cri_sandbox(Pod p, Pod* out);
  cri::PodSandboxSpec sandbox_spec(const Pod& p);
  void report_pod_status(const Pod& p);

  NodeOptions opts_;
  std::string id_, dir_;
  // The node's bpffs, for the eBPF backend's pinned links; unmounted after
  // the agent has stopped.
  std::unique_ptr<BpfFs> bpffs_;
  // The node's netns, then the pods', deleted last to first (and, declared
  // before them, after the processes in them).
  std::vector<std::unique_ptr<TestNetns>> netns_;
  std::optional<BgProcess> agent_, ztunnel_, apiserver_;
  std::unique_ptr<Containerd> containerd_;  // stopped before the agent and the netns
  struct Sandbox;
  std::vector<std::unique_ptr<Sandbox>> sandboxes_;
  struct RunDirMount;  // NodeOptions::run_dir_tmpfs, unmounted once the agent is gone
  std::unique_ptr<RunDirMount> run_dir_mount_;
  std::unique_ptr<k8s::KubeClient> kube_;
  std::vector<Pod> pods_;
  int sandbox_generation_ = 0;
};

// Runs fn inside a pod's netns on a dedicated thread.
Result<> in_pod(const Pod& p, const std::function<Result<>()>& fn);

// A TCP listener on 0.0.0.0:`port` inside a pod's netns; fails the test
// when it cannot be made.
UniqueFd listen_in(const Pod& p, int port, int backlog = 8);

// TCP connect to ip:port (optionally with SO_MARK), read one line.
// `from_port` binds the client's port (with SO_REUSEADDR) when not 0, and
// the server must close first (the TIME_WAIT is the server's).
Result<std::string> tcp_exchange(const std::string& ip, int port, unsigned mark = 0,
                                 int from_port = 0);
// UDP send to ip:port, wait for one datagram back.
Result<std::string> udp_exchange(const std::string& ip, int port);

// TCP from inside a pod; fails the test when the connection fails.
std::string in_pod_tcp(const Pod& p, const std::string& ip, int port, unsigned mark = 0);
// TCP from inside a pod that must not be captured: an error when the reply
// contains `captured_by` (e.g. "port=15006") or, with `captured_by` empty
// (nothing listens at ip:port), when any reply comes.
Result<> in_pod_tcp_not_captured(const Pod& p, const std::string& ip, int port,
                                 const std::string& captured_by = "", unsigned mark = 0);
// The emulator's record of a connection it took on `port` from `peer_ip`.
std::optional<nlohmann::json> find_record(SimNode& node, int port, const std::string& peer_ip,
                                          const std::string& proto = "tcp");

}  // namespace ambient::test
