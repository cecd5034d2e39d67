#include "support/sim_node.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "lib/unique_fd.h"
#include "process/process.h"

namespace ambient::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const std::string kBin = AMBIENT_BIN_DIR;

std::string random_id() {
  std::random_device rd;
  std::ostringstream s;
  s << std::hex << (rd() & 0xffffff);
  return s.str();
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string must_run(const std::vector<std::string>& argv) {
  auto r = run_checked({.argv = argv, .timeout = 60s});
  if (!r) FAIL("command failed: " << r.error().describe());
  return r->out;
}

void best_effort(const std::vector<std::string>& argv) { (void)run_command({.argv = argv}); }

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
  pid_t pid = -1;
  std::string top, leaf;
  ~Sandbox() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    for (std::string d = leaf; !d.empty() && d.size() >= top.size();
         d = fs::path(d).parent_path().string()) {
      ::rmdir(d.c_str());
    }
  }
};

BgProcess::BgProcess(std::vector<std::string> argv, const std::string& log_path) {
  std::vector<char*> args;
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
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
  return exit_code_;
}

void BgProcess::stop() {
  if (pid_ <= 0) return;
  // The process group: `ip netns exec` forks the real program.
  ::kill(-pid_, SIGTERM);
  for (int i = 0; i < 300; ++i) {
    int st;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(-pid_, SIGKILL);
  int st;
  ::waitpid(pid_, &st, 0);
  pid_ = -1;
}

SimNode::SimNode(NodeOptions opts) : opts_(std::move(opts)), id_(random_id()) {
  dir_ = opts_.work_root + "/amb-e2e-" + id_;
  fs::create_directories(dir_ + "/run");
  fs::create_directories(dir_ + "/zds");
  must_run({"ip", "netns", "add", node_netns()});
  netns_names_.push_back(node_netns());
  node_exec({"ip", "link", "set", "lo", "up"});

  json conflist = {
      {"cniVersion", "1.0.0"},
      {"name", "ambient-e2e"},
      {"plugins",
       {{{"type", "bridge"},
         {"bridge", "amb0"},
         {"isGateway", true},
         {"ipMasq", false},
         {"ipam",
          {{"type", "host-local"},
           {"ranges", opts_.dual_stack
                          ? json{{{{"subnet", "10.248.0.0/24"}}}, {{{"subnet", "fd00:248::/64"}}}}
                          : json{{{{"subnet", "10.248.0.0/24"}}}}},
           // Replies to SNATed kubelet probes go back through the node (the
           // only route out of the pod besides its subnet).
           {"routes", opts_.dual_stack
                          ? json{{{"dst", "169.254.7.127/32"}},
                                 {{"dst", "fd16:9254:7127:1337:ffff:ffff:ffff:ffff/128"}}}
                          : json{{{"dst", "169.254.7.127/32"}}}},
           {"dataDir", dir_ + "/ipam"}}}},
        {{"type", "istio-cni"},
         {"ambient_enabled", true},
         {"cni_agent_run_dir", dir_ + "/run"},
         {"exclude_namespaces", opts_.exclude_namespaces},
         {"pod_namespace", "istio-system"},
         {"plugin_log_level", "debug"}}}}};
  if (opts_.kubernetes) conflist["plugins"][1]["enablement_selectors"] = default_selectors_json();
  std::ofstream(dir_ + "/net.conflist") << conflist.dump(2);
  if (opts_.kubernetes) start_apiserver();
  start_agent();
  if (opts_.start_ztunnel) {
    start_ztunnel();
    wait_ztunnel_ready();
  }
}

SimNode::~SimNode() {
  for (auto it = pods_.rbegin(); it != pods_.rend(); ++it) {
    (void)run_command({.argv = {"ip", "netns", "exec", node_netns(), kBin + "/cni-driver", "del",
                                "--conflist", dir_ + "/net.conflist", "--netns", it->netns_path,
                                "--container-id", it->container_id, "--bin-dir",
                                kBin + ":/usr/lib/cni", "--cache-dir", dir_ + "/cache", "--args",
                                "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + it->ns +
                                    ";K8S_POD_NAME=" + it->name + ";K8S_POD_UID=" + it->uid}});
  }
  ztunnel_.reset();
  agent_.reset();
  apiserver_.reset();
  sandboxes_.clear();
  apiserver_.reset();
  sandboxes_.clear();
  for (auto it = netns_names_.rbegin(); it != netns_names_.rend(); ++it) {
    best_effort({"ip", "netns", "del", *it});
  }
  if (!std::getenv("AMBIENT_E2E_KEEP")) fs::remove_all(dir_);
}

void SimNode::start_agent() {
  const size_t log_size = agent_log().size();
  std::vector<std::string> enroll, exclude;
  std::string en, ex;
  for (const auto& n : opts_.enroll_namespaces) en += (en.empty() ? "" : ",") + n;
  for (const auto& n : opts_.exclude_namespaces) ex += (ex.empty() ? "" : ",") + n;
  std::vector<std::string> argv = {
      "ip",
      "netns",
      "exec",
      node_netns(),
      "env",
      "AMBIENT_CRASH_POINT_FOR_TEST=" + opts_.crash_point,
      "KUBERNETES_SERVICE_HOST=127.0.0.1",
      "KUBERNETES_SERVICE_PORT=6443",
      kBin + "/ambient-agent",
      "--cni-agent-run-dir",
      dir_ + "/run",
      "--ztunnel-uds-address",
      dir_ + "/zds/ztunnel.sock",
      "--exclude-namespaces",
      ex,
      std::string("--ambient-dns-capture=") + (opts_.dns_capture ? "true" : "false"),
      "--log_output_level",
      "debug"};
  if (opts_.backend == "nftables") argv.push_back("--native-nftables");
  if (opts_.backend == "iptables-legacy")
    argv.insert(argv.end(), {"--force-iptables-binary", "legacy"});
  if (opts_.backend == "iptables-nft") argv.insert(argv.end(), {"--force-iptables-binary", "nft"});
  if (opts_.dual_stack || opts_.agent_ipv6) argv.push_back("--ambient-ipv6");
  if (opts_.installer) {
    for (const char* d : {"/host/net.d", "/host/bin", "/plugin", "/sa"})
      fs::create_directories(dir_ + d);
    if (!fs::exists(dir_ + "/host/net.d/10-bridge.conflist")) {
      std::ofstream(dir_ + "/host/net.d/10-bridge.conflist")
          << R"({"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"bridge"}]})";
    }
    fs::copy_file(kBin + "/istio-cni", dir_ + "/plugin/istio-cni",
                  fs::copy_options::overwrite_existing);
    std::ofstream(dir_ + "/sa/token") << "fake-token";
    fs::copy_file(dir_ + "/tls/ca.crt", dir_ + "/sa/ca.crt", fs::copy_options::overwrite_existing);
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
    // The node netns plays the host, and the agent runs in it.
    argv.insert(argv.end(), {"--kubeconfig", kubeconfig(), "--node-name", kNodeName, "--host-netns",
                             "/proc/self/ns/net", "--pod-namespace", "istio-system",
                             "--ambient-enablement-selector", kDefaultSelectorsYaml});
  } else {
    argv.insert(argv.end(), {"--enroll-namespaces", en});
  }
  agent_.emplace(argv, dir_ + "/agent.log");
  for (int i = 0; i < 500; ++i) {
    if (fs::exists(agent_socket()) && fs::exists(dir_ + "/zds/ztunnel.sock")) break;
    if (!agent_->running()) FAIL("agent exited:\n" << agent_log());
    std::this_thread::sleep_for(10ms);
  }
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

void SimNode::create_agent_daemonset() {
  api_json("POST", "/api/v1/nodes",
           R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-1"}})");
  api_json("POST", "/apis/apps/v1/namespaces/istio-system/daemonsets",
           R"({"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"istio-cni-node"},
               "spec":{"selector":{"matchLabels":{"k8s-app":"istio-cni-node"}},
               "template":{"metadata":{"labels":{"k8s-app":"istio-cni-node"}},
               "spec":{"containers":[{"name":"install-cni","image":"x"}]}}}})");
}

void SimNode::start_ztunnel() {
  std::error_code ec;
  fs::remove(dir_ + "/ztunnel-state.json", ec);
  ztunnel_.emplace(
      std::vector<std::string>{"ip", "netns", "exec", node_netns(), kBin + "/ztunnel-emulator",
                               "--uds", dir_ + "/zds/ztunnel.sock", "--record",
                               dir_ + "/records.jsonl", "--state", dir_ + "/ztunnel-state.json"},
      dir_ + "/ztunnel.log");
}

void SimNode::stop_ztunnel() { ztunnel_.reset(); }

void SimNode::wait_ztunnel_ready() {
  for (int i = 0; i < 500; ++i) {
    auto s = ztunnel_state();
    if (s.value("connected", false) && s.value("snapshot_received", false)) return;
    std::this_thread::sleep_for(10ms);
  }
  FAIL("ztunnel emulator did not take a snapshot:\n" << slurp(dir_ + "/ztunnel.log"));
}

std::string SimNode::node_exec(const std::vector<std::string>& argv) {
  std::vector<std::string> full = {"ip", "netns", "exec", node_netns()};
  full.insert(full.end(), argv.begin(), argv.end());
  return must_run(full);
}

std::string SimNode::cni(const std::string& op, const Pod& p, AddResult* res) {
  auto r = run_command(
      {.argv = {"ip", "netns", "exec", node_netns(), kBin + "/cni-driver", op, "--conflist",
                dir_ + "/net.conflist", "--netns", p.netns_path, "--container-id", p.container_id,
                "--bin-dir", kBin + ":/usr/lib/cni", "--cache-dir", dir_ + "/cache", "--args",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + p.ns + ";K8S_POD_NAME=" + p.name +
                    ";K8S_POD_UID=" + p.uid},
       .timeout = 60s});
  if (!r) FAIL("cni-driver did not run: " << r.error().describe());
  res->ok = r->exit_code == 0;
  res->stderr_text = r->err;
  if (!r->out.empty()) res->output = json::parse(r->out, nullptr, false);
  return r->out;
}

AddResult SimNode::add_pod(const std::string& name, const std::string& ns, Pod* out,
                           const PodSpec& spec) {
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
  must_run({"ip", "netns", "add", p.netns_name});
  netns_names_.push_back(p.netns_name);
  must_run({"ip", "netns", "exec", p.netns_name, "ip", "link", "set", "lo", "up"});
  if (spec.disable_ipv6) {
    must_run({"ip", "netns", "exec", p.netns_name, "sysctl", "-qw",
              "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
              "net.ipv6.conf.lo.disable_ipv6=1"});
  }
  if (opts_.kubernetes) start_sandbox(p);
  pods_.push_back(p);  // DEL on teardown even if ADD fails half-way
  AddResult res;
  cni("add", p, &res);
  if (res.ok) {
    for (const auto& ip : res.output["ips"]) {
      std::string addr = ip["address"];
      addr = addr.substr(0, addr.find('/'));
      (addr.find(':') == std::string::npos ? p.ip : p.ip6) = addr;
    }
    pods_.back().ip = p.ip;
    pods_.back().ip6 = p.ip6;
    if (opts_.kubernetes) {
      json status = {
          {"status", {{"phase", "Running"}, {"podIP", p.ip}, {"podIPs", {{{"ip", p.ip}}}}}}};
      api_json("PATCH", "/api/v1/namespaces/" + ns + "/pods/" + name + "/status", status.dump(),
               "application/merge-patch+json");
    }
  }
  if (out) *out = p;
  return res;
}

void SimNode::start_sandbox(const Pod& p) {
  auto sb = std::make_unique<Sandbox>();
  sb->uid = p.uid;
  for (std::string root : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    if (!fs::exists(root + "/cgroup.procs")) continue;
    sb->top = root + "/amb-e2e-" + id_;
    sb->leaf = sb->top + "/kubepods/besteffort/pod" + p.uid + "/" + p.container_id + "pause";
    std::error_code ec;
    fs::create_directories(sb->leaf, ec);
    if (!ec) break;
    sb->leaf.clear();
  }
  if (sb->leaf.empty()) FAIL("no writable cgroup hierarchy for a pod sandbox");
  sb->pid = ::fork();
  if (sb->pid == 0) {
    ::execlp("ip", "ip", "netns", "exec", p.netns_name.c_str(), "sleep", "3600", nullptr);
    ::_exit(127);
  }
  {
    std::ofstream procs(sb->leaf + "/cgroup.procs");
    procs << sb->pid << "\n";
  }
  // `ip netns exec` switches netns after starting: wait until it has.
  struct stat want {};
  ::stat(p.netns_path.c_str(), &want);
  for (int i = 0; i < 500; ++i) {
    struct stat have {};
    if (::stat(("/proc/" + std::to_string(sb->pid) + "/ns/net").c_str(), &have) == 0 &&
        have.st_ino == want.st_ino) {
      sandboxes_.push_back(std::move(sb));
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  FAIL("pod sandbox process did not enter " << p.netns_name);
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
  apiserver_.emplace(
      std::vector<std::string>{"ip", "netns", "exec", node_netns(), kBin + "/fake-apiserver",
                               "--listen", "127.0.0.1:6443", "--tls-dir", dir_ + "/tls", "--state",
                               dir_ + "/apiserver-state.json", "--ready-file",
                               dir_ + "/apiserver.json", "--kubeconfig-out", kubeconfig(),
                               "--bookmark-interval", "1s"},
      dir_ + "/apiserver.log");
  for (int i = 0; i < 500 && !fs::exists(dir_ + "/apiserver.json"); ++i) {
    std::this_thread::sleep_for(10ms);
  }
  if (!fs::exists(dir_ + "/apiserver.json"))
    FAIL("fake-apiserver did not start:\n" << slurp(dir_ + "/apiserver.log"));
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
  AddResult res;
  cni("del", p, &res);
  return res;
}

std::string SimNode::pod_iptables(const Pod& p) {
  return must_run({"ip", "netns", "exec", p.netns_name, "iptables-save"});
}

bool SimNode::pod_has_our_rules(const Pod& p) {
  std::string rules = must_run({"ip", "netns", "exec", p.netns_name, "ip", "rule"});
  std::string rules6 = must_run({"ip", "netns", "exec", p.netns_name, "ip", "-6", "rule"});
  std::string routes =
      must_run({"ip", "netns", "exec", p.netns_name, "ip", "route", "show", "table", "all"});
  // Every backend's view: iptables-nft and native nftables both show in
  // `nft list ruleset`; legacy only in iptables-legacy-save.
  std::string nft = must_run({"ip", "netns", "exec", p.netns_name, "nft", "list", "ruleset"});
  std::string legacy = must_run({"ip", "netns", "exec", p.netns_name, "iptables-legacy-save"});
  std::string legacy6 = must_run({"ip", "netns", "exec", p.netns_name, "ip6tables-legacy-save"});
  return nft.find("ISTIO") != std::string::npos || nft.find("istio-ambient") != std::string::npos ||
         legacy.find("ISTIO") != std::string::npos || legacy6.find("ISTIO") != std::string::npos ||
         rules.find("0x111/0xfff") != std::string::npos ||
         rules6.find("0x111/0xfff") != std::string::npos ||
         routes.find("table 100") != std::string::npos;
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
  auto j = json::parse(slurp(dir_ + "/ztunnel-state.json"), nullptr, false);
  return j.is_discarded() ? json::object() : j;
}

std::string SimNode::agent_log() { return slurp(dir_ + "/agent.log"); }

Result<> in_pod(const Pod& p, const std::function<Result<>()>& fn) {
  auto ns = netns::Netns::open(p.netns_path);
  if (!ns) return std::move(ns).error();
  return netns::run_in_netns(*ns, fn);
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

Result<std::string> tcp_exchange(const std::string& ip, int port, unsigned mark) {
  AMBIENT_ASSIGN_OR_RETURN(SockAddr a, sockaddr_of(ip, port));
  UniqueFd fd(::socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (mark && ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    return sys_error("SO_MARK");
  }
  timeval tv{3, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0) {
    return sys_error("connect " + ip + ":" + std::to_string(port));
  }
  return read_line(fd.get());
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

// The emulator's record for a connection it accepted on `port` from `peer_ip`.
std::optional<json> find_record(SimNode& node, int port, const std::string& peer_ip,
                                const std::string& proto) {
  for (int i = 0; i < 100; ++i) {
    for (const auto& r : node.records()) {
      std::string peer = r.value("peer", "");
      const std::string prefix =
          peer_ip.find(':') == std::string::npos ? peer_ip + ":" : "[" + peer_ip + "]:";
      if (r.value("port", 0) == port && r.value("proto", "") == proto &&
          peer.rfind(prefix, 0) == 0) {
        return r;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  return std::nullopt;
}

// The emulator writes its state file after it acks, so state checks poll.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

}  // namespace ambient::test
