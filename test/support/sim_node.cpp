#include "support/sim_node.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "lib/unique_fd.h"
#include "process/process.h"
#include "support/backends.h"
#include "support/containerd.h"
#include "support/files.h"
#include "support/pod_sandbox.h"
#include "support/random.h"
#include "support/test_netns.h"
#include "support/text.h"

namespace ambient::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

std::string bin_path(const std::string& name) { return std::string(AMBIENT_BIN_DIR) + "/" + name; }

namespace {

// How long a command in the node or a pod may take.
constexpr auto kExecTimeout = 60s;

const char* kDefaultSelectorsYaml = R"(- podSelector:
    matchLabels: {istio.io/dataplane-mode: ambient}
- podSelector:
    matchExpressions:
    - {key: istio.io/dataplane-mode, operator: NotIn, values: [none]}
  namespaceSelector:
    matchLabels: {istio.io/dataplane-mode: ambient}
)";

json default_selectors_json() {
  return json::parse(R"([{"podSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}}},
    {"podSelector":{"matchExpressions":[{"key":"istio.io/dataplane-mode","operator":"NotIn","values":["none"]}]},
     "namespaceSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}}}])");
}

}  // namespace

// A pod's sandbox ("pause") process: sleeps inside the pod netns, in a
// kubepods-style cgroup named after the pod UID, as a runtime would place
// it. Killed and its cgroup removed on teardown.
struct SimNode::Sandbox {
  std::string uid;
  FakePodCgroup cgroup;                 // removed after the process is gone
  std::optional<ChildProcess> process;  // killed first
  Sandbox(const std::string& top, const Pod& p)
      : uid(p.uid), cgroup(top, p.uid, p.container_id + "pause") {}
};

std::vector<std::string> chart_capabilities(const std::string& backend) {
  (void)backend;  // the same for every backend (docs/node-agent.md#capabilities)
  return {"NET_ADMIN", "NET_RAW", "SYS_PTRACE", "SYS_ADMIN", "DAC_OVERRIDE"};
}

struct SimNode::RunDirMount {
  std::string path;
  RunDirMount(std::string p, const std::string& size) : path(std::move(p)) {
    const std::string data = "size=" + size + ",mode=0755";
    if (::mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, data.c_str()) != 0) {
      FAIL("mount a tmpfs of " << size << " on " << path << ": " << std::strerror(errno));
    }
  }
  ~RunDirMount() { ::umount2(path.c_str(), MNT_DETACH); }
  RunDirMount(const RunDirMount&) = delete;
  RunDirMount& operator=(const RunDirMount&) = delete;
};

BgProcess::BgProcess(std::vector<std::string> argv, const std::string& log_path) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::setpgid(0, 0);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(log);
}

BgProcess::~BgProcess() { stop(); }

bool BgProcess::running() {
  if (pid_ <= 0) return false;
  int st;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) {
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    pid_ = -1;
    return false;
  }
  return true;
}

std::optional<int> BgProcess::wait(std::chrono::milliseconds timeout) {
  if (!eventually([&] { return !running(); }, timeout)) return std::nullopt;
  return exit_code_;
}

void BgProcess::stop() {
  if (pid_ <= 0) return;
  // The process group: `ip netns exec` forks the real program.
  ::kill(-pid_, SIGTERM);
  int st;
  if (!eventually([&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; }, 3s)) {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, &st, 0);
  }
  pid_ = -1;
}

SimNode::SimNode(NodeOptions opts) : opts_(std::move(opts)), id_(random_hex(6)) {
  if (opts_.containerd) opts_.installer = true;
  dir_ = opts_.work_root + "/amb-e2e-" + id_;
  fs::create_directories(dir_ + "/run");
  if (!opts_.run_dir_tmpfs.empty()) {
    run_dir_mount_ = std::make_unique<RunDirMount>(dir_ + "/run", opts_.run_dir_tmpfs);
  }
  fs::create_directories(dir_ + "/zds");
  if (opts_.backend == kEbpf) bpffs_ = std::make_unique<BpfFs>();
  netns_.push_back(std::make_unique<TestNetns>(NetnsOptions{.name = node_netns()}));
  make_node_network();

  json plugins = primary_plugins();
  plugins.push_back({{"type", "istio-cni"},
                     {"ambient_enabled", true},
                     {"cni_agent_run_dir", dir_ + "/run"},
                     {"exclude_namespaces", opts_.exclude_namespaces},
                     {"pod_namespace", "istio-system"},
                     {"plugin_log_level", "debug"}});
  if (opts_.kubernetes) plugins.back()["enablement_selectors"] = default_selectors_json();
  json conflist = {{"cniVersion", "1.0.0"}, {"name", "ambient-e2e"}, {"plugins", plugins}};
  write_file(dir_ + "/net.conflist", conflist.dump(2));
  if (opts_.kubernetes) start_apiserver();
  if (opts_.installer) {
    // The node's primary CNI config, which the agent's installer extends:
    // the chain without us, so that what the installer makes is a chain a
    // runtime can run. Its network name is the runtime's key in the
    // node-wide CNI cache.
    json primary = conflist;
    primary["name"] = "amb-e2e-" + id_;
    primary["plugins"].erase(primary["plugins"].size() - 1);
    fs::create_directories(dir_ + "/host/net.d");
    write_file(dir_ + "/host/net.d/10-bridge.conflist", primary.dump(2));
  }
  start_agent();
  if (opts_.containerd) start_containerd();
  if (opts_.start_ztunnel) {
    start_ztunnel();
    wait_ztunnel_ready();
  }
}

// The primary CNI's plugins, by shape (docs/architecture.md#testing):
// addresses from host-local in 10.248.0.0/24 (and fd00:248::/64), the node
// at 10.248.0.1, a route back through the node for replies to SNATed
// kubelet probes, and one to the node's link with the agent's netns
// (10.249.0.0/24), as a cluster's pods reach the agent's pod. Nothing else
// leaves the pod's subnet.
json SimNode::primary_plugins() {
  json routes = {{{"dst", "169.254.7.127/32"}}, {{"dst", "10.249.0.0/24"}}};
  if (opts_.dual_stack) routes.push_back({{"dst", "fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128"}});
  json ipam = {{"type", "host-local"},
               {"ranges", opts_.dual_stack ? json{{{{"subnet", "10.248.0.0/24"}}},
                                                  {{{"subnet", "fd00:248::/64"}}}}
                                           : json{{{{"subnet", "10.248.0.0/24"}}}}},
               {"routes", routes},
               {"dataDir", dir_ + "/ipam"}};
  switch (opts_.primary) {
    case PrimaryCni::Ptp:  // a veth per pod, /32 routes through the node (Calico, Cilium)
      return json::array({{{"type", "ptp"}, {"ipMasq", false}, {"ipam", ipam}}});
    case PrimaryCni::Macvlan:  // pods on the node's own interface
      return json::array({{{"type", "macvlan"},
                           {"master", "amb" + id_ + "m"},
                           {"mode", "bridge"},
                           {"ipam", ipam}}});
    case PrimaryCni::Bridge:
    case PrimaryCni::BridgeChain:
      break;
  }
  json plugins = json::array({{{"type", "bridge"},
                               {"bridge", "amb0"},
                               {"isGateway", true},
                               {"ipMasq", false},
                               {"ipam", ipam}}});
  if (opts_.primary == PrimaryCni::BridgeChain) {  // what kubeadm-style nodes chain in front of us
    plugins.push_back({{"type", "portmap"}, {"capabilities", {{"portMappings", true}}}});
    plugins.push_back({{"type", "tuning"}, {"sysctl", {{"net.core.somaxconn", "512"}}}});
    plugins.push_back({{"type", "bandwidth"}, {"capabilities", {{"bandwidth", true}}}});
  }
  return plugins;
}

// The node's address, and with the chart's topology the agent's netns
// behind a veth (its pod network, reduced to what the agent needs: the
// node, the API server on it, and kubelet reaching its probe ports).
void SimNode::make_node_network() {
  if (opts_.primary == PrimaryCni::Macvlan) {
    // The node's "uplink" (a veth pair inside the node) is the pods'
    // master; macvlan devices cannot reach their master's own address, so
    // the node talks to pods through one of its own, as such setups do.
    const std::string master = "amb" + id_ + "m";
    node_exec({"ip", "link", "add", master, "type", "veth", "peer", "name", "amb" + id_ + "p"});
    node_exec({"ip", "link", "set", master, "up"});
    node_exec({"ip", "link", "set", "amb" + id_ + "p", "up"});
    node_exec({"ip", "link", "add", "mvl0", "link", master, "type", "macvlan", "mode", "bridge"});
    node_exec({"ip", "addr", "add", gateway() + "/24", "dev", "mvl0"});
    node_exec({"ip", "link", "set", "mvl0", "up"});
  }
  if (opts_.agent_host_network) {
    node_exec({"ip", "addr", "add", node_ip() + "/32", "dev", "lo"});
    return;
  }
  netns_.push_back(std::make_unique<TestNetns>(NetnsOptions{.name = agent_netns()}));
  const std::string host_end = "amb" + id_ + "h";
  auto r = run_checked({.argv = {"ip", "link", "add", "name", host_end, "netns", node_netns(),
                                 "type", "veth", "peer", "name", "eth0", "netns", agent_netns()}});
  if (!r) FAIL("veth between node and agent: " << r.error().describe());
  node_exec({"ip", "addr", "add", node_ip() + "/24", "dev", host_end});
  node_exec({"ip", "link", "set", host_end, "up"});
  const TestNetns& agent = netns_named(agent_netns());
  agent.exec({"ip", "addr", "add", agent_ip() + "/24", "dev", "eth0"});
  agent.exec({"ip", "link", "set", "eth0", "up"});
  agent.exec({"ip", "route", "add", "default", "via", node_ip()});
}

SimNode::~SimNode() {
  containerd_.reset();  // removes its sandboxes, so our DELs reach the agent
  for (auto it = pods_.rbegin(); it != pods_.rend() && !opts_.containerd; ++it) {
    (void)run_command({.argv = cni_argv("del", *it)});
  }
  ztunnel_.reset();
  agent_.reset();
  run_dir_mount_.reset();
  apiserver_.reset();
  sandboxes_.clear();
  while (!netns_.empty()) netns_.pop_back();
  if (!std::getenv("AMBIENT_E2E_KEEP")) fs::remove_all(dir_);
}

// The agent's command line as the chart would run it, and (with the
// installer) the host files the installer starts from.
std::vector<std::string> SimNode::agent_argv() {
  std::string en, ex;
  for (const auto& n : opts_.enroll_namespaces) en += (en.empty() ? "" : ",") + n;
  for (const auto& n : opts_.exclude_namespaces) ex += (ex.empty() ? "" : ",") + n;
  // The container's limits, set between `ip netns exec` (which needs
  // more) and the agent.
  std::vector<std::string> argv = {"ip", "netns", "exec", agent_netns()};
  if (opts_.agent_nofile > 0) {
    const std::string n = std::to_string(opts_.agent_nofile);
    argv.insert(argv.end(), {"prlimit", "--nofile=" + n + ":" + n, "--"});
  }
  // AMBIENT_E2E_UNRESTRICTED_AGENT: every capability, to tell whether a
  // failing case fails for want of one.
  if (opts_.agent_capabilities || !std::getenv("AMBIENT_E2E_UNRESTRICTED_AGENT")) {
    std::string bounding = "-all";
    for (std::string cap : opts_.agent_capabilities.value_or(chart_capabilities(opts_.backend))) {
      std::transform(cap.begin(), cap.end(), cap.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      bounding += ",+" + cap;
    }
    // With nothing inheritable, root's exec makes the bounding set its
    // permitted and effective sets: what a runtime gives the container.
    argv.insert(argv.end(), {"setpriv", "--bounding-set=" + bounding, "--inh-caps=-all", "--"});
  }
  argv.insert(
      argv.end(),
      {"env", "AMBIENT_CRASH_POINT_FOR_TEST=" + opts_.crash_point,
       // The chart sets it; it only matters when the agent is not in the
       // node's netns.
       "ALLOW_SWITCH_TO_HOST_NS=true", "KUBERNETES_SERVICE_HOST=" + node_ip(),
       "KUBERNETES_SERVICE_PORT=6443", bin_path("ambient-agent"), "--cni-agent-run-dir",
       dir_ + "/run", "--ztunnel-uds-address", dir_ + "/zds/ztunnel.sock", "--exclude-namespaces",
       ex, std::string("--ambient-dns-capture=") + (opts_.dns_capture ? "true" : "false"),
       "--log_output_level", "debug", "--host-netns", "/var/run/netns/" + node_netns()});
  const std::string& host_side = opts_.backend == kEbpf ? opts_.ebpf_host_side : opts_.backend;
  if (host_side == kNftables) argv.emplace_back("--native-nftables");
  if (host_side == kIptablesLegacy) argv.insert(argv.end(), {"--force-iptables-binary", "legacy"});
  if (host_side == kIptablesNft) argv.insert(argv.end(), {"--force-iptables-binary", "nft"});
  argv.push_back(std::string("--ebpf-redirection=") + (opts_.backend == kEbpf ? "true" : "false"));
  if (bpffs_) argv.insert(argv.end(), {"--bpf-pin-dir", bpffs_->path()});
  if (opts_.dual_stack || opts_.agent_ipv6) argv.emplace_back("--ambient-ipv6");
  if (opts_.installer) {
    for (const char* d : {"/host/net.d", "/host/bin", "/plugin", "/sa"})
      fs::create_directories(dir_ + d);
    if (!fs::exists(dir_ + "/host/net.d/10-bridge.conflist")) {
      write_file(
          dir_ + "/host/net.d/10-bridge.conflist",
          R"({"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"bridge"}]})");
    }
    fs::copy_file(bin_path("istio-cni"), dir_ + "/plugin/istio-cni",
                  fs::copy_options::overwrite_existing);
    write_file(dir_ + "/sa/token", "fake-token");
    if (fs::exists(dir_ + "/tls/ca.crt")) {  // the API server's, in Kubernetes mode
      fs::copy_file(dir_ + "/tls/ca.crt", dir_ + "/sa/ca.crt",
                    fs::copy_options::overwrite_existing);
    }
    argv.insert(argv.end(), {"--install-cni", "true", "--mounted-cni-net-dir", dir_ + "/host/net.d",
                             "--cni-bin-source-dir", dir_ + "/plugin", "--cni-bin-dir",
                             dir_ + "/host/bin", "--service-account-dir", dir_ + "/sa"});
  } else {
    argv.insert(argv.end(), {"--install-cni", "false"});
  }
  if (opts_.kubelet_uid >= 0) {
    argv.insert(argv.end(), {"--kubelet-uid", std::to_string(opts_.kubelet_uid)});
  }
  if (opts_.kubernetes) {
    argv.insert(argv.end(),
                {"--kubeconfig", kubeconfig(), "--node-name", kNodeName, "--pod-namespace",
                 "istio-system", "--ambient-enablement-selector", kDefaultSelectorsYaml});
  } else {
    argv.insert(argv.end(), {"--enroll-namespaces", en});
  }
  return argv;
}

void SimNode::start_agent() {
  const size_t log_size = agent_log().size();
  const std::vector<std::string> argv = agent_argv();
  agent_.emplace(argv, dir_ + "/agent.log");
  if (!opts_.wait_for_agent) return;
  eventually(
      [&] {
        if (fs::exists(agent_socket()) && fs::exists(dir_ + "/zds/ztunnel.sock")) return true;
        if (!agent_->running()) FAIL("agent exited:\n" << agent_log());
        return false;
      },
      5s);
  if (!fs::exists(agent_socket())) FAIL("agent did not come up:\n" << agent_log());
  // A running emulator reconnects to the new agent on its own; pods added
  // before it has taken its snapshot would find no ztunnel.
  if (ztunnel_ && ztunnel_->running()) {
    const size_t from = log_size;
    bool ok = eventually(
        [&] {
          std::string log = agent_log();
          return log.size() > from && log.find("workloads acked", from) != std::string::npos;
        },
        10s);
    if (!ok) FAIL("ztunnel did not reconnect to the restarted agent:\n" << agent_log());
  }
}

void SimNode::stop_agent() { agent_.reset(); }

std::optional<int> SimNode::wait_agent_exit(std::chrono::milliseconds timeout) {
  if (!agent_) return std::nullopt;
  return agent_->wait(timeout);
}

void SimNode::create_agent_daemonset(const json& pod_spec) {
  api_json("POST", "/api/v1/nodes",
           R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-1"}})");
  json ds = json::parse(
      R"({"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"istio-cni-node"},
               "spec":{"selector":{"matchLabels":{"k8s-app":"istio-cni-node"}},
               "template":{"metadata":{"labels":{"k8s-app":"istio-cni-node"}},
               "spec":{"containers":[{"name":"install-cni","image":"x"}]}}}})");
  ds["spec"]["template"]["spec"].merge_patch(pod_spec);
  api_json("POST", "/apis/apps/v1/namespaces/istio-system/daemonsets", ds.dump());
}

void SimNode::start_ztunnel() {
  std::error_code ec;
  fs::remove(dir_ + "/ztunnel-state.json", ec);
  ztunnel_.emplace(
      std::vector<std::string>{
          "ip", "netns", "exec", node_netns(), "env",
          std::string("ENABLE_ORIG_SRC=") + (opts_.ztunnel_orig_src ? "true" : "false"),
          bin_path("ztunnel-emulator"), "--uds", dir_ + "/zds/ztunnel.sock", "--record",
          dir_ + "/records.jsonl", "--state", dir_ + "/ztunnel-state.json"},
      dir_ + "/ztunnel.log");
}

void SimNode::stop_ztunnel() { ztunnel_.reset(); }

void SimNode::wait_ztunnel_ready() {
  const bool ready = eventually(
      [&] {
        auto s = ztunnel_state();
        return s.value("connected", false) && s.value("snapshot_received", false);
      },
      5s);
  if (!ready)
    FAIL("ztunnel emulator did not take a snapshot:\n" << read_file(dir_ + "/ztunnel.log"));
}

const TestNetns& SimNode::netns_named(const std::string& name) const {
  auto it =
      std::find_if(netns_.begin(), netns_.end(), [&](const auto& n) { return n->name() == name; });
  if (it == netns_.end()) FAIL("no netns " << name << " on this node");
  return **it;
}

std::string SimNode::node_exec(const std::vector<std::string>& argv) {
  return netns_named(node_netns()).exec(argv, "", kExecTimeout);
}

std::string SimNode::pod_exec(const Pod& p, const std::vector<std::string>& argv) {
  if (opts_.containerd) {  // the runtime's netns: reached by path
    std::vector<std::string> full = {"nsenter", "--net=" + p.netns_path};
    full.insert(full.end(), argv.begin(), argv.end());
    auto r = run_checked({.argv = full, .timeout = kExecTimeout});
    if (!r) FAIL("in " << p.name << ": " << r.error().describe());
    return r->out;
  }
  return netns_named(p.netns_name).exec(argv, "", kExecTimeout);
}

std::string SimNode::node_http_get(int port, const std::string& path) {
  return node_exec({"bash", "-c",
                    "exec 3<>/dev/tcp/" + agent_ip() + "/" + std::to_string(port) +
                        "; printf 'GET " + path + " HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"});
}

std::vector<std::string> SimNode::cni_argv(const std::string& op, const Pod& p) const {
  return {"ip",
          "netns",
          "exec",
          node_netns(),
          bin_path("cni-driver"),
          op,
          "--conflist",
          dir_ + "/net.conflist",
          "--netns",
          p.netns_path,
          "--container-id",
          p.container_id,
          "--bin-dir",
          std::string(AMBIENT_BIN_DIR) + ":/usr/lib/cni",
          "--cache-dir",
          dir_ + "/cache",
          "--args",
          "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + p.ns + ";K8S_POD_NAME=" + p.name +
              ";K8S_POD_UID=" + p.uid};
}

AddResult SimNode::cni_command(const std::string& op, const Pod& p) const {
  AddResult res;
  auto r = run_command({.argv = cni_argv(op, p), .timeout = kExecTimeout});
  if (!r) {
    res.stderr_text = "cni-driver did not run: " + r.error().describe();
    return res;
  }
  res.ok = r->exit_code == 0;
  res.stderr_text = r->err;
  if (!r->out.empty()) res.output = json::parse(r->out, nullptr, false);
  return res;
}

AddResult SimNode::add_pod(const std::string& name, const std::string& ns, Pod* out,
                           const PodSpec& spec) {
  Pod p = new_pod(name, ns, spec);
  if (spec.host_network) {  // kubelet runs no CNI for these: only the object exists
    AddResult res;
    res.ok = true;
    api_json(
        "PATCH", "/api/v1/namespaces/" + ns + "/pods/" + name + "/status",
        R"({"status":{"phase":"Running","podIP":"10.248.0.1","podIPs":[{"ip":"10.248.0.1"}]}})",
        "application/merge-patch+json");
    if (out) *out = p;
    return res;
  }
  if (opts_.containerd) {
    if (spec.before_add) spec.before_add();
    return run_cri_sandbox(std::move(p), out);
  }
  return run_sandbox(std::move(p), spec, out);
}

Pod SimNode::new_pod(const std::string& name, const std::string& ns, const PodSpec& spec) {
  Pod p;
  p.name = name;
  p.ns = ns;
  p.uid = "uid-" + id_ + "-" + name;
  if (opts_.kubernetes) {
    json obj = {{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata",
                 {{"name", name},
                  {"namespace", ns},
                  {"labels", spec.labels},
                  {"annotations", spec.annotations}}},
                {"spec",
                 {{"nodeName", kNodeName},
                  {"serviceAccountName", "sa-" + name},
                  {"hostNetwork", spec.host_network},
                  {"containers", {{{"name", "app"}, {"image", "app"}}}}}}};
    json created = api_json("POST", "/api/v1/namespaces/" + ns + "/pods", obj.dump());
    p.uid = created["metadata"]["uid"];
  }
  p.netns_name = "amb-" + id_ + "-" + name;
  p.netns_path = "/var/run/netns/" + p.netns_name;
  p.container_id = id_ + name;
  return p;
}

AddResult SimNode::recreate_sandbox(const Pod& old, Pod* out, const PodSpec& spec) {
  Pod p = old;
  const std::string n = std::to_string(++sandbox_generation_);
  p.netns_name = old.netns_name + "-s" + n;
  p.netns_path = "/var/run/netns/" + p.netns_name;
  p.container_id = old.container_id + "-s" + n;
  p.ip.clear();
  p.ip6.clear();
  ++p.attempt;
  if (opts_.containerd) return run_cri_sandbox(std::move(p), out);
  return run_sandbox(std::move(p), spec, out);
}

AddResult SimNode::run_sandbox(Pod p, const PodSpec& spec, Pod* out) {
  make_sandbox(p, spec);
  if (spec.before_add) spec.before_add();
  AddResult res = cni_command("add", p);
  if (res.ok) pod_started(p, res);
  if (out) *out = p;
  return res;
}

void SimNode::make_sandbox(const Pod& p, const PodSpec& spec) {
  netns_.push_back(
      std::make_unique<TestNetns>(NetnsOptions{.name = p.netns_name, .lo_up = !spec.lo_down}));
  if (spec.disable_ipv6) {
    pod_exec(p, {"sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.lo.disable_ipv6=1"});
  }
  if (opts_.kubernetes) start_sandbox(p);
  pods_.push_back(p);  // DEL on teardown even if ADD fails half-way
}

Pod SimNode::prepare_pod(const std::string& name, const std::string& ns, const PodSpec& spec) {
  Pod p = new_pod(name, ns, spec);
  make_sandbox(p, spec);
  return p;
}

void SimNode::pod_started(Pod& p, const AddResult& res) {
  for (const auto& ip : res.output["ips"]) {
    std::string addr = ip["address"];
    addr = addr.substr(0, addr.find('/'));
    (addr.find(':') == std::string::npos ? p.ip : p.ip6) = addr;
  }
  for (auto& q : pods_) {
    if (q.netns_name == p.netns_name) {
      q.ip = p.ip;
      q.ip6 = p.ip6;
    }
  }
  report_pod_status(p);
}

// What kubelet does once the sandbox has its IPs, when it can reach the API.
void SimNode::report_pod_status(const Pod& p) {
  if (!opts_.kubernetes || !apiserver_) return;
  json ips = json::array({{{"ip", p.ip}}});
  if (!p.ip6.empty()) ips.push_back({{"ip", p.ip6}});  // kubelet reports both families
  json status = {{"status", {{"phase", "Running"}, {"podIP", p.ip}, {"podIPs", ips}}}};
  api_json("PATCH", "/api/v1/namespaces/" + p.ns + "/pods/" + p.name + "/status", status.dump(),
           "application/merge-patch+json");
}

void SimNode::start_containerd() {
  // The installer has written our entry when the agent is up; containerd
  // reads the conf dir at start, and later only files rewritten in place.
  const std::string conf = conflist_path();
  if (!eventually([&] { return read_file(conf).find("istio-cni") != std::string::npos; }, 5s)) {
    FAIL("the installer did not add istio-cni to " << conf << ":\n" << agent_log());
  }
  // containerd takes one plugin dir: the installer's, plus the reference plugins.
  for (const auto& e : fs::directory_iterator("/usr/lib/cni")) {
    const fs::path link = fs::path(dir_) / "host/bin" / e.path().filename();
    std::error_code ec;
    if (!fs::exists(link)) fs::create_symlink(e.path(), link, ec);
  }
  containerd_ = std::make_unique<Containerd>(ContainerdOptions{.cni_bin_dir = dir_ + "/host/bin",
                                                               .cni_conf_dir = dir_ + "/host/net.d",
                                                               .netns = node_netns(),
                                                               .netns_under_state_dir = false,
                                                               .work_root = opts_.work_root});
  if (!containerd_->available()) FAIL("containerd did not start: " << containerd_->reason());
}

std::string SimNode::conflist_path() const {
  return opts_.installer ? dir_ + "/host/net.d/10-bridge.conflist" : dir_ + "/net.conflist";
}

void SimNode::rewrite_conflist(const std::function<void(json&)>& edit) {
  json j = json::parse(read_file(conflist_path()));
  edit(j);
  write_file(conflist_path(), j.dump(2));  // in place: runtimes ignore files moved in
}

Containerd& SimNode::containerd() {
  if (!containerd_) FAIL("this node has no containerd (NodeOptions::containerd)");
  return *containerd_;
}

// The sandbox config kubelet sends for a pod, on creation and with every
// container it adds.
cri::PodSandboxSpec SimNode::sandbox_spec(const Pod& p) {
  auto& c = containerd();
  return {.name = p.name,
          .ns = p.ns,
          .uid = p.uid,
          .attempt = p.attempt,
          .log_directory = c.log_directory(p.ns, p.name, p.uid),
          .cgroup_parent = c.cgroup_parent(p.uid)};
}

AddResult SimNode::run_cri_sandbox(Pod p, Pod* out) {
  auto& c = containerd();
  AddResult res;
  auto id = c.cri().run_pod_sandbox(sandbox_spec(p));
  if (!id) {
    res.output = {{"msg", id.error().describe()}};
    if (out) *out = p;
    return res;
  }
  auto st = c.cri().pod_sandbox_status(*id);
  if (!st) FAIL("PodSandboxStatus " << *id << ": " << st.error().describe());
  res.ok = true;
  p.container_id = *id;
  p.netns_path = st->netns_path;
  p.netns_name = fs::path(st->netns_path).filename();
  for (const auto& ip : st->ips) (ip.find(':') == std::string::npos ? p.ip : p.ip6) = ip;
  res.output = {{"sandbox", *id}, {"ips", st->ips}};
  pods_.push_back(p);
  report_pod_status(p);
  if (out) *out = p;
  return res;
}

std::string SimNode::start_container(const Pod& p, const std::string& name) {
  auto& c = containerd();
  cri::ContainerSpec spec{
      .name = name, .image = Containerd::kBusyboxImage, .command = {"sleep", "3600"}};
  auto id = c.cri().create_container(p.container_id, spec, sandbox_spec(p));
  if (!id) FAIL("CreateContainer in " << p.name << ": " << id.error().describe());
  auto started = c.cri().start_container(*id);
  if (!started) FAIL("StartContainer in " << p.name << ": " << started.error().describe());
  return *id;
}

std::pair<int, std::string> SimNode::container_exec(const std::string& container_id,
                                                    const std::vector<std::string>& argv) {
  auto r = containerd().cri().exec_sync(container_id, argv, 20s);
  if (!r) FAIL("ExecSync in " << container_id << ": " << r.error().describe());
  return {r->exit_code, r->out};
}

AddResult SimNode::stop_sandbox(const Pod& p) {
  AddResult res;
  auto r = containerd().cri().stop_pod_sandbox(p.container_id);
  res.ok = r.has_value();
  if (!r) res.output = {{"msg", r.error().describe()}};
  return res;
}

AddResult SimNode::remove_sandbox(const Pod& p) {
  AddResult res;
  auto r = containerd().cri().remove_pod_sandbox(p.container_id);
  res.ok = r.has_value();
  if (!r) res.output = {{"msg", r.error().describe()}};
  return res;
}

void SimNode::start_sandbox(const Pod& p) {
  auto sb = std::make_unique<Sandbox>("amb-e2e-" + id_, p);
  if (!sb->cgroup.usable()) FAIL("no writable cgroup hierarchy for a pod sandbox");
  sb->process.emplace(
      std::vector<std::string>{"ip", "netns", "exec", p.netns_name, "sleep", "3600"});
  sb->cgroup.add(sb->process->pid());
  if (!wait_until_in_netns(*sb->process, p.netns_path, 5s)) {
    FAIL("pod sandbox process did not enter " << p.netns_name);
  }
  sandboxes_.push_back(std::move(sb));
}

void SimNode::kill_sandbox(const Pod& p) {
  for (auto it = sandboxes_.begin(); it != sandboxes_.end(); ++it) {
    if ((*it)->uid == p.uid) {
      sandboxes_.erase(it);  // kills the process, removes its cgroup
      return;
    }
  }
}

void SimNode::start_apiserver() {
  fs::create_directories(dir_ + "/tls");
  fs::remove(dir_ + "/apiserver.json");
  std::vector<std::string> argv = {"ip", "netns", "exec", node_netns(), bin_path("fake-apiserver")};
  argv.insert(argv.end(), {"--listen", node_ip() + ":6443", "--san", node_ip(), "--tls-dir",
                           dir_ + "/tls", "--ready-file", dir_ + "/apiserver.json",
                           "--kubeconfig-out", kubeconfig(), "--bookmark-interval", "1s"});
  if (opts_.apiserver_state) {
    argv.insert(argv.end(), {"--state", dir_ + "/apiserver-state.json"});
  }
  apiserver_.emplace(argv, dir_ + "/apiserver.log");
  if (!eventually([&] { return fs::exists(dir_ + "/apiserver.json"); }, 5s))
    FAIL("fake-apiserver did not start:\n" << read_file(dir_ + "/apiserver.log"));
  if (!opts_.installer) {  // else the agent's installer writes the plugin's kubeconfig
    fs::copy_file(kubeconfig(), plugin_kubeconfig(), fs::copy_options::overwrite_existing);
  }
  auto cfg = k8s::load_kubeconfig(kubeconfig());
  if (!cfg) FAIL("kubeconfig: " << cfg.error().describe());
  kube_ = std::make_unique<k8s::KubeClient>(*cfg);
}

void SimNode::stop_apiserver() { apiserver_.reset(); }

Result<k8s::HttpResult> SimNode::api(const std::string& method, const std::string& path,
                                     const std::string& body, const std::string& content_type) {
  auto ns = netns::Netns::open("/var/run/netns/" + node_netns());
  if (!ns) return std::move(ns).error();
  Result<k8s::HttpResult> out = make_error(Errc::Internal, "not run");
  auto r = netns::run_in_netns(*ns, [&]() -> Result<> {
    out = kube_->request(method, path, body, content_type);
    return {};
  });
  if (!r) return std::move(r).error();
  return out;
}

Result<k8s::HttpResult> SimNode::api_from_another_client(const std::string& method,
                                                         const std::string& path) {
  auto ns = netns::Netns::open("/var/run/netns/" + node_netns());
  if (!ns) return std::move(ns).error();
  auto cfg = k8s::load_kubeconfig(kubeconfig());
  if (!cfg) return std::move(cfg).error();
  Result<k8s::HttpResult> out = make_error(Errc::Internal, "not run");
  auto r = netns::run_in_netns(*ns, [&]() -> Result<> {
    out = k8s::KubeClient(*cfg).request(method, path);
    return {};
  });
  if (!r) return std::move(r).error();
  return out;
}

json SimNode::api_json(const std::string& method, const std::string& path, const std::string& body,
                       const std::string& content_type) {
  auto r = api(method, path, body, content_type);
  if (!r) FAIL(method << " " << path << ": " << r.error().describe());
  if (r->status >= 300) FAIL(method << " " << path << ": HTTP " << r->status << " " << r->body);
  return json::parse(r->body);
}

void SimNode::create_namespace(const std::string& name, json labels) {
  json obj = {{"apiVersion", "v1"},
              {"kind", "Namespace"},
              {"metadata", {{"name", name}, {"labels", labels}}}};
  api_json("POST", "/api/v1/namespaces", obj.dump());
}

void SimNode::label_namespace(const std::string& name, const std::string& key,
                              std::optional<std::string> value) {
  json patch = {{"metadata", {{"labels", {{key, value ? json(*value) : json(nullptr)}}}}}};
  api_json("PATCH", "/api/v1/namespaces/" + name, patch.dump(), "application/merge-patch+json");
}

Pod SimNode::must_add_pod(const std::string& name, const std::string& ns, const PodSpec& spec) {
  Pod p;
  auto r = add_pod(name, ns, &p, spec);
  if (!r.ok) {
    FAIL("ADD " << ns << "/" << name << " failed: " << r.output.dump() << "\n"
                << r.stderr_text << "\nagent log:\n"
                << agent_log());
  }
  return p;
}

AddResult SimNode::del_pod(const Pod& p) {
  if (opts_.containerd) {
    AddResult stopped = stop_sandbox(p);
    return stopped.ok ? remove_sandbox(p) : stopped;
  }
  return cni_command("del", p);
}

void SimNode::forget_pod(const Pod& p) {
  std::erase_if(pods_, [&](const Pod& q) { return q.netns_name == p.netns_name; });
  std::erase_if(netns_, [&](const auto& n) { return n->name() == p.netns_name; });
}

std::string SimNode::pod_iptables(const Pod& p) { return pod_exec(p, {"iptables-save"}); }

bool SimNode::pod_has_our_rules(const Pod& p) {
  std::string rules = pod_exec(p, {"ip", "rule"});
  std::string rules6 = pod_exec(p, {"ip", "-6", "rule"});
  std::string routes = pod_exec(p, {"ip", "route", "show", "table", "all"});
  // Every backend's view: iptables-nft and native nftables both show in
  // `nft list ruleset`; legacy only in iptables-legacy-save.
  std::string nft = pod_exec(p, {"nft", "list", "ruleset"});
  std::string legacy = pod_exec(p, {"iptables-legacy-save"});
  std::string legacy6 = pod_exec(p, {"ip6tables-legacy-save"});
  // eBPF: filters of ours (their programs are named amb_*) on any hook.
  return pod_filters(p).find("amb_") != std::string::npos ||
         nft.find("ISTIO") != std::string::npos || nft.find("istio-ambient") != std::string::npos ||
         legacy.find("ISTIO") != std::string::npos || legacy6.find("ISTIO") != std::string::npos ||
         rules.find("0x111/0xfff") != std::string::npos ||
         rules6.find("0x111/0xfff") != std::string::npos ||
         routes.find("table 100") != std::string::npos;
}

bool SimNode::ztunnel_has(const Pod& p) { return ztunnel_state()["workloads"].contains(p.uid); }

std::string SimNode::redirection_annotation(const Pod& p) {
  const json pod = api_json("GET", "/api/v1/namespaces/" + p.ns + "/pods/" + p.name);
  return pod["metadata"]
      .value("annotations", json::object())
      .value("ambient.istio.io/redirection", "");
}

std::string SimNode::pod_redirection(const Pod& p) {
  return without_counters(without_comments(
      nft_chains_sorted(pod_exec(p, {"nft", "list", "ruleset"})) +
      pod_exec(p, {"iptables-legacy-save"}) + pod_exec(p, {"ip6tables-legacy-save"}) +
      pod_exec(p, {"ip", "rule"}) + pod_exec(p, {"ip", "-6", "rule"}) +
      pod_exec(p, {"ip", "route", "show", "table", "100"}) + pod_filters(p)));
}

std::string SimNode::pod_filters(const Pod& p) {
  std::string filters;
  std::istringstream links(pod_exec(p, {"ip", "-o", "link", "show"}));
  for (std::string line; std::getline(links, line);) {
    // "2: eth0@if7: <...": the name ends at '@' or ':'.
    const size_t start = line.find(": ") + 2;
    const std::string itf = line.substr(start, line.find_first_of("@:", start) - start);
    for (const char* hook : {"ingress", "egress"}) {
      std::string out = pod_exec(p, {"tc", "filter", "show", "dev", itf, hook});
      if (!out.empty()) filters += itf + " " + hook + ":\n" + out;
    }
  }
  // Programs are told apart by name and tag: each agent process loads
  // them under new ids.
  return std::regex_replace(filters, std::regex(R"((:\[| id )\d+)"), "$1N");
}

std::vector<json> SimNode::records() {
  std::vector<json> out;
  std::ifstream f(dir_ + "/records.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = json::parse(line, nullptr, false);
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

json SimNode::ztunnel_state() {
  auto j = json::parse(read_file(dir_ + "/ztunnel-state.json"), nullptr, false);
  return j.is_discarded() ? json::object() : j;
}

std::string SimNode::agent_log() { return read_file(dir_ + "/agent.log"); }

Result<> in_pod(const Pod& p, const std::function<Result<>()>& fn) {
  auto ns = netns::Netns::open(p.netns_path);
  if (!ns) return std::move(ns).error();
  return netns::run_in_netns(*ns, fn);
}

UniqueFd listen_in(const Pod& p, int port, int backlog) {
  UniqueFd out;
  auto r = in_pod(p, [&]() -> Result<> {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return sys_error("bind");
    if (::listen(fd.get(), backlog) != 0) return sys_error("listen");
    out = std::move(fd);
    return {};
  });
  if (!r) FAIL("listen in " << p.name << ": " << r.error().describe());
  return out;
}

namespace {

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = 0;
};

Result<SockAddr> sockaddr_of(const std::string& ip, int port) {
  SockAddr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  if (::inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = a.family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in);
    return a;
  }
  if (::inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = a.family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in6);
    return a;
  }
  return make_error(Errc::InvalidArgument, "bad ip " + ip);
}

Result<std::string> read_line(int fd) {
  std::string out;
  char buf[512];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 3000) <= 0) return make_error(Errc::Timeout, "no reply within 3 s");
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) return sys_error("read");
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.find('\n') != std::string::npos) return out;
  }
}

}  // namespace

Result<std::string> tcp_exchange(const std::string& ip, int port, unsigned mark, int from_port) {
  AMBIENT_ASSIGN_OR_RETURN(SockAddr a, sockaddr_of(ip, port));
  UniqueFd fd(::socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (mark && ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    return sys_error("SO_MARK");
  }
  if (from_port != 0) {
    const int on = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    // The wildcard address of the destination's family, at that port.
    AMBIENT_ASSIGN_OR_RETURN(SockAddr any,
                             sockaddr_of(a.family == AF_INET6 ? "::" : "0.0.0.0", from_port));
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&any.ss), any.len) != 0) {
      return sys_error("bind port " + std::to_string(from_port));
    }
  }
  timeval tv{3, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0) {
    return sys_error("connect " + ip + ":" + std::to_string(port));
  }
  AMBIENT_ASSIGN_OR_RETURN(std::string line, read_line(fd.get()));
  if (from_port != 0) {
    // The port is about to be reused: only the server may close first, or
    // this side keeps the tuple in TIME_WAIT and the next connect fails.
    AMBIENT_ASSIGN_OR_RETURN(std::string rest, read_line(fd.get()));
    if (!rest.empty()) return make_error(Errc::Internal, "more than one line: " + rest);
  }
  return line;
}

Result<std::string> udp_exchange(const std::string& ip, int port) {
  AMBIENT_ASSIGN_OR_RETURN(SockAddr a, sockaddr_of(ip, port));
  UniqueFd fd(::socket(a.family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0)
    return sys_error("connect");
  const char q[] = "dns?";
  if (::send(fd.get(), q, sizeof q - 1, 0) < 0) return sys_error("send");
  return read_line(fd.get());
}

std::string in_pod_tcp(const Pod& p, const std::string& ip, int port, unsigned mark) {
  std::string reply;
  auto r = in_pod(p, [&]() -> Result<> {
    AMBIENT_ASSIGN_OR_RETURN(reply, tcp_exchange(ip, port, mark));
    return {};
  });
  if (!r)
    FAIL("tcp from " << p.name << " to " << ip << ":" << port << ": " << r.error().describe());
  return reply;
}

Result<> in_pod_tcp_not_captured(const Pod& p, const std::string& ip, int port,
                                 const std::string& captured_by, unsigned mark) {
  return in_pod(p, [&]() -> Result<> {
    auto reply = tcp_exchange(ip, port, mark);
    if (reply && reply->find(captured_by) != std::string::npos) {
      return make_error(Errc::Internal, "connection to " + ip + ":" + std::to_string(port) +
                                            " from " + p.name + " was captured: " + *reply);
    }
    return {};
  });
}

// The emulator's record for a connection it accepted on `port` from `peer_ip`.
std::optional<json> find_record(SimNode& node, int port, const std::string& peer_ip,
                                const std::string& proto) {
  const std::string prefix =
      peer_ip.find(':') == std::string::npos ? peer_ip + ":" : "[" + peer_ip + "]:";
  std::optional<json> found;
  eventually(
      [&] {
        for (const auto& r : node.records()) {
          std::string peer = r.value("peer", "");
          if (r.value("port", 0) == port && r.value("proto", "") == proto &&
              peer.rfind(prefix, 0) == 0) {
            found = r;
            return true;
          }
        }
        return false;
      },
      1s);
  return found;
}

}  // namespace ambient::test
