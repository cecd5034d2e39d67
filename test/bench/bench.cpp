// Benchmarks that print numbers (one JSON object per result on stdout, a
// human summary on stderr). They run on the real kernel with the real
// plugin, agent and ztunnel emulator, as the e2e tests do. Needs root.
//
//   ambient-bench enroll        plugin exec -> exit for ADD of enrolled pods, per backend:
//                               200 sequential, then bursts of 10 and 100 concurrent;
//                               in Kubernetes mode (a PATCH each): 100 sequential, bursts of 10,
//                               100
//   ambient-bench plugin-exec   fixed cost of the plugin: excluded namespace, VERSION
//   ambient-bench restart       agent start -> snapshot acked, with 50, 110, 250 enrolled pods
//   ambient-bench stomp-repair  another CNI rewrites the conflist -> our entry is back
//   ambient-bench rss           agent RSS (steady and peak) at 0, 110 and 250 pods
//   ambient-bench datapath      new TCP connections/s through redirection vs. without
//   ambient-bench churn         1,000 pods added, used and deleted: leftovers, fds, threads, RSS
//   ambient-bench all
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <ctime>
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <numeric>
#include <regex>
#include <sstream>
#include <thread>

#include "agent_client.h"
#include "lib/cni_event.h"
#include "lib/unique_fd.h"
#include "process/process.h"
#include "support/backends.h"
#include "support/churn.h"
#include "support/files.h"
#include "support/sim_node.h"
#include "support/test_netns.h"

extern char** environ;

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::vector<std::string> g_backends;  // kBackends unless --backend says otherwise

struct Stats {
  double p50, p99, max;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
  };
  return {at(0.5), at(0.99), v.back()};
}

void emit(const std::string& bench, const std::string& backend, json params, json numbers) {
  json j = {{"bench", bench}, {"backend", backend}, {"params", params}};
  for (auto& [k, v] : numbers.items()) j[k] = v;
  std::cout << j.dump() << std::endl;
}

// Runs a program once, as a runtime runs a plugin; returns microseconds
// exec -> exit (-1: it failed). `minflt`, when given, receives the child's
// minor page faults (its rusage): what the exec's pages cost.
double exec_program(const std::string& bin, const std::vector<std::string>& env,
                    const std::string& stdin_data, long* minflt = nullptr) {
  int in[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return -1;  // no other spawned child may hold it
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::string arg0 = bin;
  char* argv[] = {arg0.data(), nullptr};
  auto start = std::chrono::steady_clock::now();
  pid_t pid;
  int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv, envp.data());
  ::close(in[0]);
  if (rc == 0) {
    ssize_t n = ::write(in[1], stdin_data.data(), stdin_data.size());
    (void)n;
  }
  ::close(in[1]);
  int status = 0;
  rusage ru{};
  if (rc == 0) ::wait4(pid, &status, 0, &ru);
  if (minflt) *minflt = ru.ru_minflt;
  posix_spawn_file_actions_destroy(&fa);
  double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  return rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? us : -1;
}

double exec_plugin(const std::vector<std::string>& env, const std::string& stdin_data,
                   long* minflt = nullptr) {
  return exec_program(bin_path("istio-cni"), env, stdin_data, minflt);
}

// `n` runs at once, each on its own thread: microseconds each.
std::vector<double> exec_burst(int n, const std::function<double()>& run) {
  std::vector<double> us(n, -1);
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) threads.emplace_back([&, i] { us[i] = run(); });
  for (auto& t : threads) t.join();
  return us;
}

// The runtime's config for our plugin, with the previous plugin's result
// giving pod `i` its address.
std::string pod_address(int i) {
  return "10.248." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 2) + "/16";
}

std::string plugin_conf(SimNode& node, int i = 0) {
  const std::string ip = pod_address(i);
  return json(
             {{"cniVersion", "1.0.0"},
              {"name", "bench"},
              {"type", "istio-cni"},
              {"ambient_enabled", true},
              {"cni_agent_run_dir", node.dir() + "/run"},
              {"exclude_namespaces", {"kube-system"}},
              {"prevResult",
               {{"cniVersion", "1.0.0"}, {"ips", {{{"address", ip}, {"gateway", "10.248.0.1"}}}}}}})
      .dump();
}

// The pod UID the runtime passes: the API object's in Kubernetes mode.
using UidOf = std::function<std::string(const std::string& name)>;
std::string made_up_uid(const std::string& name) { return "uid-" + name; }

std::vector<std::string> add_env(const std::string& ns, const std::string& name,
                                 const std::string& netns, const UidOf& uid_of = made_up_uid) {
  return {"CNI_COMMAND=ADD",
          "CNI_CONTAINERID=bench" + name,
          "CNI_NETNS=" + netns,
          "CNI_IFNAME=eth0",
          "CNI_PATH=/usr/lib/cni",
          "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=" + name +
              ";K8S_POD_UID=" + uid_of(name)};
}

// Pod `i`'s netns as the runtime hands it to the chain's last plugin: lo
// up (the runtime's own step), and eth0, one end of a veth whose other end
// is up in the node netns, holding the pod's address. `tag` keeps the
// node-side names (at most 15 characters) apart between batches.
std::unique_ptr<TestNetns> pod_netns(SimNode& node, const std::string& tag, int i) {
  auto ns = std::make_unique<TestNetns>(
      NetnsOptions{.name = "amb-b-" + node.id() + "-" + tag + std::to_string(i), .lo_up = false});
  const std::string peer = "vb" + tag + std::to_string(i);
  AMBIENT_REQUIRE_OK(run_checked({.argv = {"ip", "-n", ns->name(), "-batch", "-"},
                                  .stdin_data = "link set lo up\n"
                                                "link add eth0 type veth peer name " +
                                                peer + " netns " + node.node_netns() +
                                                "\n"
                                                "addr add " +
                                                pod_address(i) +
                                                " dev eth0\n"
                                                "link set eth0 up\n"}));
  AMBIENT_REQUIRE_OK(
      run_checked({.argv = {"ip", "-n", node.node_netns(), "link", "set", peer, "up"}}));
  return ns;
}

std::string metrics(SimNode& node) { return node.node_http_get(15014, "/metrics"); }

// Every histogram's _sum and _count in a /metrics text, keyed by the
// series name as rendered (e.g. `x_sum{phase="rules"}`).
std::map<std::string, double> histogram_totals(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    std::string series = line.substr(0, space);
    std::string base = series.substr(0, series.find('{'));
    if (base.size() > 4 && (base.ends_with("_sum") || base.ends_with("_count"))) {
      out[series] = std::stod(line.substr(space + 1));
    }
  }
  return out;
}

// Mean of one histogram series between two snapshots, in microseconds.
// `labels` as rendered inside the braces, e.g. phase="rules" (empty: none).
double mean_us(const std::map<std::string, double>& before,
               const std::map<std::string, double>& after, const std::string& name,
               const std::string& labels = "") {
  const std::string suffix = labels.empty() ? "" : "{" + labels + "}";
  auto delta = [&](const std::string& key) {
    auto a = after.find(key);
    auto b = before.find(key);
    return (a == after.end() ? 0 : a->second) - (b == before.end() ? 0 : b->second);
  };
  double count = delta(name + "_count" + suffix);
  return count > 0 ? delta(name + "_sum" + suffix) / count * 1e6 : 0;
}

// The agent's own account of the pods just enrolled: mean per phase.
json agent_phases(const std::map<std::string, double>& before,
                  const std::map<std::string, double>& after) {
  json phases;
  for (const char* p : {"parse", "decision", "netns", "rules", "zds", "probe_set"}) {
    phases[std::string(p) + "_mean_us"] = mean_us(
        before, after, "ambient_enroll_phase_duration_seconds", std::string("phase=\"") + p + "\"");
  }
  phases["cmdadd_mean_us"] = mean_us(before, after, "ambient_cmdadd_duration_seconds");
  phases["zds_round_trip_mean_us"] =
      mean_us(before, after, "ambient_zds_round_trip_duration_seconds", "op=\"add\"");
  return phases;
}

NodeOptions bench_node(const std::string& backend) {
  NodeOptions o;
  o.backend = backend;
  // The host side nftables' too, so eBPF and nftables differ in the pods
  // alone (with iptables-nft, every start re-reads the forced variant's
  // host state and the probe set is an ipset).
  o.ebpf_host_side = kNftables;
  o.work_root = "/dev/shm";
  return o;
}

// The agent's share alone: POST /cmdadd as the plugin would (same body,
// same socket), timed from connect to the reply. Returns microseconds, or
// -1 when the agent did not answer 200.
double post_cmdadd(SimNode& node, const std::string& ns, const std::string& name,
                   const std::string& netns, int index) {
  cni::CniEvent ev{.netns = netns,
                   .pod_name = name,
                   .pod_namespace = ns,
                   .pod_uid = "uid-" + name,
                   .container_id = "bench" + name,
                   .ifname = "eth0"};
  auto ip = IpPrefix::parse(pod_address(index));
  if (ip) ev.ips.push_back({.address = *ip});
  const std::string body = cni::encode_event(ev);
  cni::UnixHttpClient client;
  auto start = std::chrono::steady_clock::now();
  auto r = client.post(node.dir() + "/run/" + std::string(cni::kPluginEventSocket),
                       cni::kCmdAddPath, body, 5000ms);
  double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  return r && r->status == 200 ? us : -1;
}

// CPU time (user + system) of a process, in ms: its threads' schedstat run
// times (exact), plus what the children it reaped used (the iptables
// commands the agent runs; clock ticks, the only measure /proc has).
double process_cpu_ms(pid_t pid) {
  double ns = 0;
  const std::string dir = "/proc/" + std::to_string(pid);
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator(dir + "/task", ec)) {
    std::ifstream f(t.path() / "schedstat");
    double run = 0;
    if (f >> run) ns += run;
  }
  const std::string text = read_file(dir + "/stat");
  std::istringstream rest(text.substr(text.rfind(')') + 2));  // after "pid (comm) "
  std::vector<std::string> f{std::istream_iterator<std::string>(rest), {}};
  // Fields 16 and 17 of the file (cutime, cstime), counted from state (3).
  if (f.size() > 14) {
    const auto ticks_per_s = static_cast<double>(::sysconf(_SC_CLK_TCK));
    ns += (std::stod(f[13]) + std::stod(f[14])) * 1e9 / ticks_per_s;
  }
  return ns / 1e6;
}

// How many times a process's threads were put on a CPU: each is a wake-up
// (or a preemption), which costs the hypervisor's trap on this VM.
long process_slices(pid_t pid) {
  long slices = 0;
  std::error_code ec;
  for (const auto& t :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream f(t.path() / "schedstat");
    double run = 0, wait = 0;
    long n = 0;
    if (f >> run >> wait >> n) slices += n;
  }
  return slices;
}

// CPU time of this process's reaped children (the plugin runs), in ms.
double children_cpu_ms() {
  rusage ru{};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  auto ms = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) * 1e3 + static_cast<double>(tv.tv_usec) / 1e3;
  };
  return ms(ru.ru_utime) + ms(ru.ru_stime);
}

// What one batch of enrollments measured: the exec -> exit times of the
// plugin runs that succeeded, how many failed, and the CPU per pod (us).
struct BatchResult {
  std::vector<double> ok;
  int failures = 0;
  double plugin_cpu_us = 0, agent_cpu_us = 0, ztunnel_cpu_us = 0;
  double apiserver_cpu_us = 0;  // Kubernetes mode: the fake API server's
  double agent_slices = 0;      // per pod
};

// Enrolls `n` new pods, `concurrency` plugin runs at a time; the pods join
// `pods` (their IPs follow the pods already there).
BatchResult run_batch(SimNode& node, std::vector<std::unique_ptr<TestNetns>>& pods, int n,
                      int concurrency, const std::string& tag, const UidOf& uid_of) {
  std::vector<std::unique_ptr<TestNetns>> batch;
  std::vector<std::string> confs;  // every pod its own IP, as on a node
  for (int i = 0; i < n; ++i) {
    const int index = static_cast<int>(pods.size()) + i;
    batch.push_back(pod_netns(node, tag, index));
    confs.push_back(plugin_conf(node, index));
  }
  std::vector<double> us(n, -1);
  std::atomic<int> next{0};
  std::vector<std::thread> workers;
  workers.reserve(concurrency);
  // CPU from here to the last exit (the netns above are made by `ip`,
  // also our children): a burst cannot end before all of it has run on
  // this machine's cores.
  const double agent0 = process_cpu_ms(node.agent_pid()), zt0 = process_cpu_ms(node.ztunnel_pid()),
               plugin0 = children_cpu_ms();
  const long agent_slices0 = process_slices(node.agent_pid());
  const pid_t apiserver = node.apiserver_pid();
  const double api0 = apiserver > 0 ? process_cpu_ms(apiserver) : 0;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      for (int i; (i = next++) < n;) {
        us[i] = exec_plugin(
            add_env("ambient-demo", tag + std::to_string(i), batch[i]->path(), uid_of), confs[i]);
      }
    });
  }
  for (auto& t : workers) t.join();
  BatchResult r;
  r.plugin_cpu_us = (children_cpu_ms() - plugin0) / n * 1e3;
  r.agent_cpu_us = (process_cpu_ms(node.agent_pid()) - agent0) / n * 1e3;
  r.ztunnel_cpu_us = (process_cpu_ms(node.ztunnel_pid()) - zt0) / n * 1e3;
  r.agent_slices = static_cast<double>(process_slices(node.agent_pid()) - agent_slices0) / n;
  if (apiserver > 0) r.apiserver_cpu_us = (process_cpu_ms(apiserver) - api0) / n * 1e3;
  r.failures = static_cast<int>(std::count(us.begin(), us.end(), -1));
  for (double v : us) {
    if (v >= 0) r.ok.push_back(v);
  }
  for (auto& b : batch) pods.push_back(std::move(b));
  return r;
}

// One batch through the plugin, reported: latencies, CPU per pod, and the
// agent's own account of its phases.
struct Batch {
  int n, concurrency;
  std::string tag;   // names its pods
  std::string mode;  // standalone or kubernetes
  UidOf uid_of = made_up_uid;
};

void bench_enroll_batch(SimNode& node, const std::string& backend,
                        std::vector<std::unique_ptr<TestNetns>>& pods, const Batch& b) {
  const int n = b.n, conc = b.concurrency;
  auto before = histogram_totals(metrics(node));
  const BatchResult r = run_batch(node, pods, n, conc, b.tag, b.uid_of);
  json cpu = {
      {"plugin", r.plugin_cpu_us}, {"agent", r.agent_cpu_us}, {"ztunnel", r.ztunnel_cpu_us}};
  if (b.mode == "kubernetes") cpu["apiserver"] = r.apiserver_cpu_us;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const double plugin_cpu = r.plugin_cpu_us / 1e3, agent_cpu = r.agent_cpu_us / 1e3,
               zt_cpu = r.ztunnel_cpu_us / 1e3;
  auto after = histogram_totals(metrics(node));
  auto s = stats(r.ok);
  // The fake API server shares this machine's cores (a real one would not).
  const double floor_ms = (agent_cpu + zt_cpu + plugin_cpu + r.apiserver_cpu_us / 1e3) * n / cores;
  emit("enroll", backend, {{"pods", n}, {"concurrency", conc}, {"mode", b.mode}},
       {{"p50_us", s.p50},
        {"p99_us", s.p99},
        {"max_us", s.max},
        {"failures", r.failures},
        {"cpu_per_pod_us", cpu},
        {"agent_slices_per_pod", r.agent_slices},
        {"cpu_floor_us", floor_ms * 1e3}});
  std::cerr << "enroll " << backend << " " << b.mode << " n=" << n << " concurrency=" << conc
            << ": p50 " << s.p50 / 1000 << " ms, p99 " << s.p99 / 1000 << " ms, max "
            << s.max / 1000 << " ms, failures " << r.failures << "\n  CPU per pod: plugin "
            << plugin_cpu << " ms, agent " << agent_cpu << " ms, ztunnel " << zt_cpu << " ms"
            << (b.mode == "kubernetes"
                    ? ", fake API server " + std::to_string(r.apiserver_cpu_us / 1e3) + " ms"
                    : std::string())
            << "; all " << n << " on " << cores << " cores need >= " << floor_ms
            << " ms\n  the agent's threads were put on a CPU " << r.agent_slices
            << " times per pod\n";
  json phases = agent_phases(before, after);
  emit("enroll-phases", backend, {{"pods", n}, {"concurrency", conc}, {"mode", b.mode}}, phases);
  std::cerr << "  agent phases: " << phases.dump() << "\n";
}

// The agent's share as exact quantiles (the histograms only have buckets):
// the same sequential enrollment without the plugin in front.
void bench_enroll_agent(SimNode& node, const std::string& backend,
                        std::vector<std::unique_ptr<TestNetns>>& pods) {
  std::vector<double> agent_us;
  int failures = 0;
  const size_t first = pods.size();
  for (int i = 0; i < 200; ++i) {  // all made first, as for the batches
    pods.push_back(pod_netns(node, "d", static_cast<int>(first) + i));
  }
  auto before = histogram_totals(metrics(node));
  for (int i = 0; i < 200; ++i) {
    double us = post_cmdadd(node, "ambient-demo", "d" + std::to_string(i), pods[first + i]->path(),
                            static_cast<int>(first) + i);
    if (us < 0)
      ++failures;
    else
      agent_us.push_back(us);
  }
  const json phases = agent_phases(before, histogram_totals(metrics(node)));
  auto s = stats(agent_us);
  const double mean = agent_us.empty() ? 0
                                       : std::accumulate(agent_us.begin(), agent_us.end(), 0.0) /
                                             static_cast<double>(agent_us.size());
  // The share if the backend's install cost nothing: ztunnel's round trip
  // would start where the rules start and run beside the probe set, and all
  // else (the HTTP exchange, parsing, the netns, the store) stays. Means,
  // from this batch's own histograms (docs/performance.md#agent-share-floor).
  const double after_netns = phases["rules_mean_us"].get<double>() +
                             phases["probe_set_mean_us"].get<double>() +
                             phases["zds_mean_us"].get<double>();
  const double floor = mean - after_netns +
                       std::max(phases["zds_round_trip_mean_us"].get<double>(),
                                phases["probe_set_mean_us"].get<double>());
  emit("enroll-agent", backend, {{"pods", 200}, {"concurrency", 1}},
       {{"p50_us", s.p50},
        {"p99_us", s.p99},
        {"max_us", s.max},
        {"mean_us", mean},
        {"no_install_floor_us", floor},
        {"failures", failures}});
  std::cerr << "enroll-agent " << backend << " (POST /cmdadd, no plugin) n=200: p50 "
            << s.p50 / 1000 << " ms, p99 " << s.p99 / 1000 << " ms, max " << s.max / 1000
            << " ms, mean " << mean / 1000 << " ms, failures " << failures
            << "\n  the mean if the install cost nothing: " << floor / 1000
            << " ms\n  agent phases: " << phases.dump() << "\n";
}

// 200 sequential plugin runs, then bursts of 10 and 100; then the agent alone.
void bench_enroll(const std::string& backend) {
  SimNode node(bench_node(backend));
  std::vector<std::unique_ptr<TestNetns>> pods;
  for (const Batch& b : {Batch{200, 1, "s", "standalone"}, Batch{10, 10, "b", "standalone"},
                         Batch{100, 100, "c", "standalone"}}) {
    bench_enroll_batch(node, backend, pods, b);
  }
  bench_enroll_agent(node, backend, pods);
}

// Kubernetes mode: the ADD is answered once the pod is also annotated
// through the API server (docs/node-agent.md#the-redirection-annotation),
// so each enrollment includes a PATCH to the fake API server. The pod
// objects exist before their ADD, as kubelet only runs sandboxes of
// scheduled pods.
void bench_enroll_kubernetes(const std::string& backend) {
  NodeOptions o = bench_node(backend);
  o.kubernetes = true;
  o.apiserver_state = false;
  SimNode node(o);
  node.create_namespace("ambient-demo", {{"istio.io/dataplane-mode", "ambient"}});
  const std::vector<Batch> batches = {
      {100, 1, "ks", "kubernetes"}, {10, 10, "kb", "kubernetes"}, {100, 100, "kc", "kubernetes"}};
  auto uids = std::make_shared<std::map<std::string, std::string>>();
  for (const Batch& b : batches) {
    for (int i = 0; i < b.n; ++i) {
      const std::string name = b.tag + std::to_string(i);
      json pod = {
          {"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "ambient-demo"}}},
          {"spec",
           {{"nodeName", kNodeName}, {"containers", {{{"name", "app"}, {"image", "app"}}}}}}};
      json made = node.api_json("POST", "/api/v1/namespaces/ambient-demo/pods", pod.dump());
      (*uids)[name] = made["metadata"]["uid"];
    }
  }
  std::this_thread::sleep_for(1s);  // the agent's pod cache has seen them
  std::vector<std::unique_ptr<TestNetns>> pods;
  for (Batch b : batches) {
    b.uid_of = [uids](const std::string& name) { return uids->at(name); };
    bench_enroll_batch(node, backend, pods, b);
  }
}

// The burst of 100 ADDs without the work: 100 execs at once of the
// program that does nothing, and of our plugin answering VERSION. No
// plugin's burst can finish sooner than these on this machine.
void bench_exec_bursts(const std::string& noop) {
  for (int round = 0; round < 3; ++round) {
    for (auto [name, bin, env] :
         {std::tuple{"noop-static-binary", noop, std::vector<std::string>{}},
          std::tuple{"version", bin_path("istio-cni"),
                     std::vector<std::string>{"CNI_COMMAND=VERSION"}}}) {
      // Named copies: a lambda cannot capture structured bindings in clang 14.
      const double cpu0 = children_cpu_ms();
      auto us = exec_burst(100, [&program = bin, &program_env = env] {
        return exec_program(program, program_env, "");
      });
      // What one exec costs the machine (the child's side of the spawn, the
      // exec, the exit): with 100 at once on this machine's cores, the burst
      // cannot be shorter than that spread over them.
      const double cpu_per_exec_us = (children_cpu_ms() - cpu0) / 100 * 1e3;
      const auto failures = std::count(us.begin(), us.end(), -1);
      auto s = stats(us);
      emit("plugin-exec", "-", {{"case", name}, {"runs", 100}, {"concurrency", 100}},
           {{"p50_us", s.p50},
            {"p99_us", s.p99},
            {"max_us", s.max},
            {"failures", failures},
            {"cpu_per_exec_us", cpu_per_exec_us}});
      std::cerr << "plugin-exec " << name << ", 100 at once: p50 " << s.p50 / 1000 << " ms, p99 "
                << s.p99 / 1000 << " ms; CPU per exec " << cpu_per_exec_us / 1000 << " ms\n";
    }
  }
}

void bench_plugin_exec() {
  SimNode node(bench_node(kIptablesNft));
  const std::string conf = plugin_conf(node);
  TestNetns ns(NetnsOptions{.name = "amb-b-" + node.id() + "-x", .lo_up = false});
  // At debug level the excluded pod's line is logged, so the run also
  // sends it to the agent's log.sock (docs/cni-plugin.md#log-channel).
  json logged = json::parse(conf);
  logged["plugin_log_level"] = "debug";
  const std::string logged_conf = logged.dump();
  // Microseconds exec -> exit and minor page faults, run by run.
  struct Runs {
    std::vector<double> us;
    std::vector<double> minflt;
    void add(const std::function<double(long*)>& run) {
      long faults = 0;
      us.push_back(run(&faults));
      minflt.push_back(static_cast<double>(faults));
    }
  };
  Runs excluded, excluded_logged, version;
  for (int i = 0; i < 200; ++i) {
    excluded.add(
        [&](long* f) { return exec_plugin(add_env("kube-system", "dns", ns.path()), conf, f); });
    excluded_logged.add([&](long* f) {
      return exec_plugin(add_env("kube-system", "dns", ns.path()), logged_conf, f);
    });
    version.add([](long* f) { return exec_plugin({"CNI_COMMAND=VERSION"}, "", f); });
  }
  // The HTTP round trip alone: the agent answers an excluded pod at once.
  std::vector<double> round_trip;
  round_trip.reserve(200);
  for (int i = 0; i < 200; ++i) {
    round_trip.push_back(post_cmdadd(node, "kube-system", "dns", ns.path(), i));
  }
  // What this machine charges for any exec: the same runs of a static
  // program that does nothing. Hosts differ (and one VM from hour to hour),
  // so every result is best read next to this one, as the ratios are.
  const std::string noop = bin_path("ambient-bench-noop");
  Runs floor;
  for (int i = 0; i < 200; ++i) {
    floor.add([&](long* f) { return exec_program(noop, {}, "", f); });
  }
  const Stats floor_us = stats(floor.us);
  const Stats floor_minflt = stats(floor.minflt);
  for (auto [name, runs] :
       {std::pair{"excluded-namespace", &excluded},
        std::pair{"excluded-namespace-log-sent", &excluded_logged}, std::pair{"version", &version},
        std::pair{"noop-static-binary", &floor}}) {
    auto s = stats(runs->us);
    auto f = stats(runs->minflt);
    emit("plugin-exec", "-", {{"case", name}, {"runs", 200}, {"concurrency", 1}},
         {{"p50_us", s.p50},
          {"p99_us", s.p99},
          {"max_us", s.max},
          {"minflt_p50", f.p50},
          {"p50_ratio_to_noop", s.p50 / floor_us.p50},
          {"minflt_ratio_to_noop", f.p50 / floor_minflt.p50}});
    std::cerr << "plugin-exec " << name << ": p50 " << s.p50 << " us (" << s.p50 / floor_us.p50
              << "x noop), minor faults p50 " << f.p50 << " (" << f.p50 / floor_minflt.p50
              << "x noop)\n";
  }
  auto rt = stats(round_trip);
  emit("plugin-exec", "-",
       {{"case", "agent-round-trip-excluded"}, {"runs", 200}, {"concurrency", 1}},
       {{"p50_us", rt.p50}, {"p99_us", rt.p99}, {"max_us", rt.max}});
  std::cerr << "plugin-exec agent-round-trip-excluded: p50 " << rt.p50 << " us\n";
  bench_exec_bursts(noop);
}

std::pair<long, long> rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  long rss = 0, hwm = 0;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stol(line.substr(6));
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::stol(line.substr(6));
  }
  return {rss, hwm};
}

void bench_rss(const std::string& backend) {
  SimNode node(bench_node(backend));
  std::vector<std::unique_ptr<TestNetns>> pods;
  int enrolled = 0;
  for (int target : {0, 110, 250}) {
    while (enrolled < target) {
      pods.push_back(pod_netns(node, "r", enrolled));
      exec_plugin(add_env("ambient-demo", "r" + std::to_string(enrolled), pods.back()->path()),
                  plugin_conf(node, enrolled));
      ++enrolled;
    }
    std::this_thread::sleep_for(200ms);
    auto [rss, hwm] = rss_kib(node.agent_pid());
    emit("rss", backend, {{"pods", target}}, {{"rss_kib", rss}, {"peak_rss_kib", hwm}});
    std::cerr << "rss " << backend << " pods=" << target << ": " << rss << " KiB (peak " << hwm
              << " KiB)\n";
  }
}

// "2026-11-28T00:40:15.697749Z" (the agent's log timestamps) as a time point.
std::optional<std::chrono::system_clock::time_point> parse_log_time(const std::string& line) {
  std::tm tm{};
  int micros = 0;
  if (std::sscanf(line.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &micros) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(::timegm(&tm)) + std::chrono::microseconds(micros);
}

// Agent restart with N enrolled pods (Kubernetes mode, an upgrade: the
// rules stay): from the agent's exec to ztunnel's ack of the snapshot,
// which the agent only sends once the pod cache is rebuilt from the API
// and every pod's rules are verified (reconciled) in its netns. ztunnel is
// restarted with the agent, as soon as the ZDS socket exists, so its
// reconnect back-off does not count.
void bench_restart(const std::string& backend) {
  NodeOptions o = bench_node(backend);
  o.kubernetes = true;
  o.apiserver_state = false;
  SimNode node(o);
  node.create_namespace("mesh", {{"istio.io/dataplane-mode", "ambient"}});
  node.create_namespace("istio-system");
  node.create_agent_daemonset();
  std::vector<Pod> pods;
  for (int target : {50, 110, 250}) {
    while (static_cast<int>(pods.size()) < target) {
      pods.push_back(node.must_add_pod("p" + std::to_string(pods.size()), "mesh"));
    }
    eventually([&] { return node.ztunnel_state()["workloads"].size() >= pods.size(); }, 5s);
    if (node.ztunnel_state()["workloads"].size() != pods.size()) FAIL("pods did not enroll");
    node.stop_agent();
    node.stop_ztunnel();
    const size_t log_from = node.agent_log().size();
    const auto start = std::chrono::system_clock::now();
    node.start_agent();  // returns once its sockets exist
    node.start_ztunnel();
    const std::string acked = "snapshot of " + std::to_string(target) + " workloads acked";
    std::optional<std::chrono::system_clock::time_point> end;
    std::string rebuilt;
    for (int i = 0; i < 12000 && !end; ++i) {  // up to a minute
      std::istringstream log(node.agent_log().substr(log_from));
      std::string line;
      while (std::getline(log, line)) {
        if (line.find("enrolled pods rebuilt") != std::string::npos) rebuilt = line;
        if (line.find(acked) != std::string::npos) end = parse_log_time(line);
      }
      if (!end) std::this_thread::sleep_for(5ms);
    }
    if (!end)
      FAIL("no snapshot of " << target << " acked after the restart:\n" << node.agent_log());
    double ms = std::chrono::duration<double, std::milli>(*end - start).count();
    emit("restart", backend, {{"pods", target}}, {{"restart_ms", ms}});
    // Where the time went: the start-up steps' log lines, ms after the exec.
    std::istringstream steps(node.agent_log().substr(log_from));
    for (std::string line; std::getline(steps, line);) {
      const auto at = parse_log_time(line);
      if (!at) continue;
      for (const char* step :
           {"kubernetes mode:", "eBPF feature gate:", "redirection backend:", "host probe SNAT via",
            "enrolled pods rebuilt", "ambient-agent ready"}) {
        if (line.find(step) != std::string::npos) {
          std::cerr << "  +" << std::chrono::duration<double, std::milli>(*at - start).count()
                    << " ms " << line.substr(line.find(step), 120) << "\n";
        }
      }
    }
    std::cerr << "restart " << backend << " pods=" << target << ": " << ms << " ms to the acked "
              << "snapshot (" << rebuilt.substr(rebuilt.find("startup:")) << ")\n";
  }
}

// The agent's installer against another CNI that rewrites its conflist (a
// new file renamed over it, as Cilium does), now and then: the time until
// our entry is back in the file.
void bench_stomp_repair() {
  NodeOptions o = bench_node(kIptablesNft);
  o.kubernetes = true;  // the installer writes the plugin's kubeconfig
  o.installer = true;
  SimNode node(o);
  const std::string conflist = node.dir() + "/host/net.d/10-bridge.conflist";
  const std::string theirs =
      R"({"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"bridge"}]})";
  auto has_entry = [&] { return read_file(conflist).find("istio-cni") != std::string::npos; };
  if (!eventually(has_entry, 5s))
    FAIL("the installer never wrote its entry:\n" << node.agent_log());
  std::vector<double> us;
  for (int i = 0; i < 50; ++i) {
    // Occasional rewrites: the installer backs off from rewrites less than
    // 150 ms after its own write (a fight), which this must not measure.
    std::this_thread::sleep_for(300ms);
    write_file(conflist + ".other", theirs);
    auto start = std::chrono::steady_clock::now();
    std::filesystem::rename(conflist + ".other", conflist);
    if (!eventually(has_entry, 5s, 200us)) FAIL("entry not repaired within 5 s");
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  auto s = stats(us);
  emit("stomp-repair", "-", {{"rewrites", us.size()}},
       {{"p50_us", s.p50}, {"p99_us", s.p99}, {"max_us", s.max}});
  std::cerr << "stomp-repair: p50 " << s.p50 / 1000 << " ms, p99 " << s.p99 / 1000 << " ms, max "
            << s.max / 1000 << " ms\n";
}

// Bulk throughput of the traffic every enrolled pod carries once ztunnel
// proxies it: ztunnel's own connections (mark 0x539), which the pod's
// rules or programs see on every packet but leave alone. From the enrolled
// pod A and from the plain pod D to C, MiB/s up (the pod sends) and down
// (the pod receives), in interleaved rounds.
struct Bulk {
  double up = 0, up_limit = 0, down = 0, down_limit = 0;
  int transfers = 0;
  int failures = 0;  // transfers that did not complete
};

constexpr size_t kBulkBytes = size_t{256} << 20;  // per transfer
constexpr unsigned kZtunnelMark = 0x539;

// Serves one transfer per connection on `port` in pod `p`: reads to EOF
// (sink) or writes kBulkBytes and closes (source).
class BulkServer {
 public:
  BulkServer(const Pod& p, int port, bool source)
      : fd_(listen_in(p, port, 16)), thread_([this, source] { serve(source); }) {}
  ~BulkServer() {
    stop_ = true;
    thread_.join();
  }
  BulkServer(const BulkServer&) = delete;
  BulkServer& operator=(const BulkServer&) = delete;

 private:
  void serve(bool source) {
    std::vector<char> buf(size_t{1} << 16);
    while (!stop_) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      UniqueFd conn(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) continue;
      if (source) {
        for (size_t sent = 0; sent < kBulkBytes;) {
          const ssize_t w =
              ::send(conn.get(), buf.data(), std::min(buf.size(), kBulkBytes - sent), MSG_NOSIGNAL);
          if (w <= 0) break;
          sent += static_cast<size_t>(w);
        }
      } else {
        while (::read(conn.get(), buf.data(), buf.size()) > 0) {
        }
      }
    }
  }

  UniqueFd fd_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// One transfer from inside `from`, as ztunnel would make it; MiB/s, or 0
// when it failed.
double bulk_transfer(const Pod& from, const std::string& ip, int port, bool upload) {
  double mib_per_s = 0;
  (void)in_pod(from, [&]() -> Result<> {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const unsigned mark = kZtunnelMark;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, ip.c_str(), &to.sin_addr);
    const auto start = std::chrono::steady_clock::now();
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) return {};
    std::vector<char> buf(size_t{1} << 16);
    size_t moved = 0;
    if (upload) {
      while (moved < kBulkBytes) {
        const ssize_t w =
            ::send(fd.get(), buf.data(), std::min(buf.size(), kBulkBytes - moved), MSG_NOSIGNAL);
        if (w <= 0) return {};
        moved += static_cast<size_t>(w);
      }
      ::shutdown(fd.get(), SHUT_WR);
      while (::read(fd.get(), buf.data(), buf.size()) > 0) {  // the sink has read it all
      }
    } else {
      for (ssize_t r; (r = ::read(fd.get(), buf.data(), buf.size())) > 0;) {
        moved += static_cast<size_t>(r);
      }
      if (moved != kBulkBytes) return {};
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    mib_per_s = static_cast<double>(moved) / (1 << 20) / secs;
    return {};
  });
  return mib_per_s;
}

Bulk bench_bulk(const Pod& a, const Pod& c, const Pod& d) {
  BulkServer sink(c, 8081, false), source(c, 8082, true);
  const int rounds = 8;
  std::vector<double> up, up_limit, down, down_limit;
  for (int r = 0; r < rounds; ++r) {
    up.push_back(bulk_transfer(a, c.ip, 8081, true));
    up_limit.push_back(bulk_transfer(d, c.ip, 8081, true));
    down.push_back(bulk_transfer(a, c.ip, 8082, false));
    down_limit.push_back(bulk_transfer(d, c.ip, 8082, false));
  }
  // Medians: one transfer is short enough for a scheduling hiccup to show.
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  int failures = 0;
  for (const auto* v : {&up, &up_limit, &down, &down_limit}) {
    failures += static_cast<int>(std::count(v->begin(), v->end(), 0.0));
  }
  return {median(up), median(up_limit), median(down), median(down_limit), 4 * rounds, failures};
}

void bench_datapath(const std::string& backend) {
  SimNode node(bench_node(backend));
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  Pod d = node.must_add_pod("d", "plain");
  // A plain echo server in C, for the no-redirection limit (D -> C).
  std::atomic<bool> stop{false};
  UniqueFd server = listen_in(c, 8080, 512);
  std::thread srv([&] {
    while (!stop) {
      pollfd p{server.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      UniqueFd conn(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
      ssize_t n = ::write(conn.get(), "plain\n", 6);
      (void)n;
    }
  });
  auto loop = [&](const Pod& from, const std::string& ip, int n) {
    double secs = 0;
    int ok = 0;
    (void)in_pod(from, [&]() -> Result<> {
      auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < n; ++i) {
        if (tcp_exchange(ip, 8080)) ++ok;
      }
      secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return {};
    });
    return std::make_pair(ok / secs, ok);
  };
  // Interleaved rounds, so a change in the VM's speed during the run
  // weighs on both sides alike.
  const int n = 4000, rounds = 20;
  double redirected_s = 0, limit_s = 0;
  int ok1 = 0, ok2 = 0;
  for (int r = 0; r < rounds; ++r) {
    auto [rate1, done1] = loop(a, c.ip, n / rounds);  // A's 15001 takes it
    auto [rate2, done2] = loop(d, c.ip, n / rounds);  // straight to C
    redirected_s += done1 / rate1;
    limit_s += done2 / rate2;
    ok1 += done1;
    ok2 += done2;
  }
  const double redirected = ok1 / redirected_s, limit = ok2 / limit_s;
  stop = true;
  srv.join();
  json results = {{"conns_per_s", redirected},
                  {"limit_conns_per_s", limit},
                  {"ratio", redirected / limit},
                  {"ok", ok1},
                  {"limit_ok", ok2}};
  // The eBPF programs' own account of the run: SYNs that met a TIME_WAIT
  // socket of ztunnel's (docs/redirection.md#ebpf-limits), fail-closed drops.
  std::string decisions;
  std::istringstream metrics(node.node_http_get(15014, "/metrics"));
  for (std::string line; std::getline(metrics, line);) {
    static const std::regex kDecision(
        R"re(^ambient_redirect_decisions_total\{backend="ebpf",decision="(\w+)"\} (\d+))re");
    std::smatch m;
    if (std::regex_search(line, m, kDecision) &&
        (m[1].str().rfind("time_wait_", 0) == 0 || m[1].str().rfind("drop_", 0) == 0)) {
      results["ebpf_" + m[1].str()] = std::stoll(m[2]);
      decisions += " " + m[1].str() + "=" + m[2].str();
    }
  }
  const Bulk bulk = bench_bulk(a, c, d);
  results["bulk_up_ratio"] = bulk.up / bulk.up_limit;
  results["bulk_down_ratio"] = bulk.down / bulk.down_limit;
  results["bulk_up_mib_per_s"] = bulk.up;
  results["bulk_down_mib_per_s"] = bulk.down;
  results["bulk_failures"] = bulk.failures;
  emit("datapath", backend, {{"connections", n}}, results);
  std::cerr << "datapath " << backend << ": " << redirected << " conns/s redirected, " << limit
            << " without (ratio " << redirected / limit << "), " << ok1 << "/" << n
            << " redirected connections answered" << decisions << "\n  bulk, ztunnel's leg: up "
            << bulk.up << " MiB/s (ratio " << bulk.up / bulk.up_limit << "), down " << bulk.down
            << " MiB/s (ratio " << bulk.down / bulk.down_limit << "), " << bulk.failures << " of "
            << bulk.transfers << " transfers failed\n";
}

// docs/reliability.md#churn: the e2e test's churn, longer, with its figures.
void bench_churn(const std::string& backend) {
  constexpr int kCycles = 1000;
  SimNode node(bench_node(backend));
  const ChurnResult r = churn(node, kCycles);
  const json results = {{"cycles_per_s", kCycles / r.seconds},
                        {"leftover_pod_state", r.leftover_pod_state},
                        {"leftover_host_entries", r.leftover_host_entries},
                        {"leftover_workloads", r.leftover_workloads},
                        {"leftover_links", r.leftover_links.size()},
                        {"new_run_dir_files", r.new_run_files.size()},
                        {"fds_warm", r.warm.fds},
                        {"fds_end", r.end.fds},
                        {"fds_leaked", r.leaked_fds.size()},
                        {"threads_warm", r.warm.threads},
                        {"threads_end", r.end.threads},
                        {"rss_warm_kib", r.warm.rss_kib},
                        {"rss_end_kib", r.end.rss_kib}};
  emit("churn", backend, {{"cycles", kCycles}}, results);
  std::cerr << "churn " << backend << ": " << kCycles << " cycles in " << r.seconds
            << " s; leftovers: pod state " << r.leftover_pod_state << ", host entries "
            << r.leftover_host_entries << ", ztunnel workloads " << r.leftover_workloads
            << ", pinned links " << r.leftover_links.size() << ", run-dir files "
            << r.new_run_files.size() << "; agent fds " << r.warm.fds << " -> " << r.end.fds
            << " (leaked " << r.leaked_fds.size() << ")"
            << ", threads " << r.warm.threads << " -> " << r.end.threads << ", RSS "
            << r.warm.rss_kib << " -> " << r.end.rss_kib << " KiB (after 20 warm-up cycles)\n";
}

}  // namespace

// Each benchmark is a hidden Catch2 test case, so the harness's checks
// (FAIL in SimNode) report properly; Catch's own report goes to stderr.
TEST_CASE("plugin-exec", "[.][plugin-exec]") { bench_plugin_exec(); }
TEST_CASE("enroll", "[.][enroll]") {
  for (const auto& b : g_backends) {
    bench_enroll(b);
    bench_enroll_kubernetes(b);
  }
}
TEST_CASE("restart", "[.][restart]") {
  for (const auto& b : g_backends) bench_restart(b);
}
TEST_CASE("stomp-repair", "[.][stomp-repair]") { bench_stomp_repair(); }
TEST_CASE("rss", "[.][rss]") {
  for (const auto& b : g_backends) bench_rss(b);
}
TEST_CASE("churn", "[.][churn]") {
  for (const auto& b : g_backends) bench_churn(b);
}
TEST_CASE("datapath", "[.][datapath]") {
  for (const auto& b : g_backends) bench_datapath(b);
}

int main(int argc, char** argv) {
  if (::geteuid() != 0) {
    std::cerr << "ambient-bench needs root (network namespaces)\n";
    return 77;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const char* usage =
      "usage: ambient-bench [enroll|plugin-exec|restart|stomp-repair|rss|datapath|churn|all]\n"
      "                     [--backend B]...\n"
      "Prints one JSON object per result on stdout, a summary on stderr.\n"
      "  --backend B   iptables-legacy, iptables-nft, nftables or ebpf; repeat for several\n"
      "                (default: all four; rss measures each one given)\n";
  std::string what = "all";
  std::vector<std::string> backends;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    }
    if (a == "--backend" && i + 1 < argc) {
      backends.emplace_back(argv[++i]);
      continue;
    }
    if (a.rfind("--", 0) == 0) {
      std::cerr << "ambient-bench: unknown flag " << a << "\n" << usage;
      return 2;
    }
    what = a;
  }
  g_backends = backends.empty() ? kBackends : backends;
  std::string filter = what == "all"
                           ? "[plugin-exec],[enroll],[restart],[stomp-repair],[rss],[datapath]"
                           : "[" + what + "]";
  const char* args[] = {"ambient-bench", "-o", "/dev/stderr", filter.c_str()};
  return Catch::Session().run(4, const_cast<char**>(args));
}
