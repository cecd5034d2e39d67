// ambientctl and the agent's admin API on a simulated node: real pods made
// through the CNI chain, the real agent and ztunnel emulator, every
// backend. Drift is injected by hand in the pod netns and must be found.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "process/process.h"
#include "support/backends.h"
#include "support/sim_node.h"
#include "support/temp_dir.h"
#include "support/text.h"
#include "support/wait.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

struct Ctl {
  int code = -1;
  std::string out, err;
};

// ambientctl's command line against the node's agent; as `uid` when set
// (setpriv).
std::vector<std::string> ambientctl_argv(SimNode& node, const std::vector<std::string>& args,
                                         int uid = -1) {
  std::vector<std::string> argv;
  if (uid >= 0) {
    argv = {"setpriv", "--reuid",           std::to_string(uid),
            "--regid", std::to_string(uid), "--clear-groups"};
  }
  argv.insert(argv.end(), {bin_path("ambientctl"), "--socket", node.dir() + "/run/admin.sock"});
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

Ctl ambientctl(SimNode& node, const std::vector<std::string>& args, int uid = -1) {
  auto r = run_command({.argv = ambientctl_argv(node, args, uid), .timeout = 30s});
  REQUIRE(r);
  return {r->exit_code, r->out, r->err};
}

json ambientctl_json(SimNode& node, std::vector<std::string> args) {
  args.insert(args.end(), {"-o", "json"});
  auto r = ambientctl(node, args);
  INFO(r.err);
  REQUIRE(r.code == 0);
  return json::parse(r.out);
}

// Takes one piece of the pod's redirection away, as another program on the
// node might: for each backend, its own kind of rule.
void delete_a_rule(SimNode& node, const Pod& p, const std::string& backend) {
  if (backend == kIptablesLegacy || backend == kIptablesNft) {
    node.pod_exec(p, {backend, "-t", "nat", "-D", "PREROUTING", "-j", "ISTIO_PRERT"});
  } else if (backend == kNftables) {
    node.pod_exec(p, {"nft", "flush", "chain", "inet", "istio-ambient-nat", "istio-prerouting"});
  } else if (backend == kEbpf) {
    // A program detached.
    node.pod_exec(
        p, {"tc", "filter", "del", "dev", "eth0", "egress", "pref", "1", "handle", "0x539", "bpf"});
  } else {
    node.pod_exec(p, {"ip", "route", "del", "local", "0.0.0.0/0", "dev", "lo", "table", "100"});
  }
}

}  // namespace

TEST_CASE("ambientctl status, pods and pod describe the node's real pods", "[e2e][admin]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");

  json status = ambientctl_json(node, {"status"});
  CHECK(status["version"] == "0.1.0");
  CHECK(status["mode"] == "standalone");
  CHECK(status["ztunnel_connections"] == 1);
  CHECK(status["pods"]["enrolled"] == 1);
  CHECK_FALSE(status["backend"].get<std::string>().empty());
  CHECK_FALSE(status["config"].empty());

  json pods = ambientctl_json(node, {"pods"});
  REQUIRE(pods["pods"].size() == 1);  // c is not selected: the agent does not track it
  CHECK(pods["pods"][0]["name"] == "a");
  CHECK(pods["pods"][0]["state"] == "enrolled");
  CHECK(pods["pods"][0]["ips"][0] == a.ip);

  json pod = ambientctl_json(node, {"pod", "ambient-demo/a"});
  CHECK(pod["uid"] == a.uid);
  CHECK(pod["netns"] == a.netns_path);
  CHECK(pod["container_id"] == a.container_id);
  CHECK(pod["zds_state"] == "acked");
  CHECK(pod["steps"].size() == 3);
  CHECK_FALSE(pod["enrolled_at"].get<std::string>().empty());

  auto table = ambientctl(node, {"pods"});
  CHECK(table.code == 0);
  CHECK_THAT(table.out, Catch::StartsWith("NAMESPACE"));
  CHECK_THAT(table.out, Catch::Contains(a.netns_path));

  auto unknown = ambientctl(node, {"pod", "plain/c"});
  CHECK(unknown.code == 2);
  CHECK_THAT(unknown.err, Catch::Contains("pod plain/c is not known to the agent"));
  auto malformed = ambientctl(node, {"pod", "no-slash"});
  CHECK(malformed.code == 2);
  CHECK(node.agent_running());
}

TEST_CASE(
    "ambientctl verify finds a deleted rule, a removed fwmark rule and a closed ztunnel "
    "listener",
    "[e2e][admin]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");

  auto clean = ambientctl(node, {"verify", "--all"});
  INFO(clean.out << clean.err);
  CHECK(clean.code == 0);
  CHECK_THAT(clean.out, Catch::Contains("2 pods: 2 clean"));

  delete_a_rule(node, a, opts.backend);
  auto rule = ambientctl(node, {"verify", "ambient-demo/a"});
  INFO(rule.out << rule.err);
  CHECK(rule.code == 1);
  CHECK_THAT(rule.out, Catch::Contains("ambient-demo/a: DRIFT"));

  node.pod_exec(b,
                {"ip", "rule", "del", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100"});
  auto fwmark = ambientctl(node, {"verify", "ambient-demo/b", "-o", "json"});
  INFO(fwmark.out << fwmark.err);
  CHECK(fwmark.code == 1);
  json problems = json::parse(fwmark.out)["pods"][0]["problems"];
  CHECK_FALSE(problems.empty());

  // Every listener of the pod's proxy goes with the emulator.
  node.stop_ztunnel();
  auto listeners = ambientctl(node, {"verify", "--all"});
  INFO(listeners.out << listeners.err);
  CHECK(listeners.code == 1);
  CHECK_THAT(listeners.out, Catch::Contains("ztunnel listener tcp/15001 missing"));
  CHECK_THAT(listeners.out, Catch::Contains("ztunnel listener tcp/15006 missing"));
}

TEST_CASE(
    "ambientctl inspect shows a pod's rules and ztunnel's sockets, with or without the "
    "agent",
    "[e2e][admin]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");

  auto by_pod = ambientctl(node, {"inspect", "ambient-demo/a", "-o", "json"});
  INFO(by_pod.err);
  REQUIRE(by_pod.code == 0);
  json j = json::parse(by_pod.out);
  CHECK(j["netns"] == a.netns_path);
  CHECK(j["ztunnel_listeners_missing"].empty());
  CHECK_THAT(j["ip_rules"].get<std::string>(), Catch::Contains("lookup 100"));
  CHECK_THAT(j["route_table_100"].get<std::string>(), Catch::Contains("local default dev lo"));
  if (opts.backend == kIptablesLegacy) {
    CHECK_THAT(j["iptables_legacy"].get<std::string>(), Catch::Contains("ISTIO_PRERT"));
  } else if (opts.backend == kIptablesNft) {
    CHECK_THAT(j["iptables_nft"].get<std::string>(), Catch::Contains("ISTIO_PRERT"));
  } else if (opts.backend == kNftables) {
    CHECK_THAT(j["nftables"].get<std::string>(), Catch::Contains("istio-ambient-nat"));
  } else if (opts.backend == kEbpf) {
    // The programs' counters, read through the attached program: a captured
    // connection shows.
    CHECK_THAT(in_pod_tcp(a, node.gateway(), 8080), Catch::Contains("port=15001"));
    auto after = ambientctl(node, {"inspect", "ambient-demo/a", "-o", "json"});
    REQUIRE(after.code == 0);
    const json counters = json::parse(after.out)["ebpf_counters"];
    INFO(counters.dump());
    CHECK(counters.value("outbound", 0) >= 1);
    CHECK(counters.contains("time_wait_syn"));
  }
  if (opts.backend != kEbpf) CHECK_FALSE(j.contains("ebpf_counters"));
  std::set<int> ports;
  for (const auto& s : j["sockets"]) ports.insert(s["port"].get<int>());
  for (int p : {15001, 15006, 15008, 15053}) CHECK(ports.count(p) == 1);

  // No agent: --netns still reads the kernel, and changes nothing.
  // Without iptables-save's "Generated on <time>" comments.
  const std::string before = without_comments(node.pod_iptables(a));
  node.stop_agent();
  auto direct = ambientctl(node, {"inspect", "--netns", a.netns_path});
  INFO(direct.err);
  CHECK(direct.code == 0);
  CHECK_THAT(direct.out, Catch::Contains("ztunnel listeners: all present"));
  CHECK(without_comments(node.pod_iptables(a)) == before);
  auto status = ambientctl(node, {"status"});
  CHECK(status.code == 3);
  CHECK_THAT(status.err, Catch::Contains("no agent is serving"));
}

TEST_CASE("ambientctl inspect --netns refuses what is not a network namespace", "[e2e][admin]") {
  TempDir dir;
  const std::string file = dir.path() + "/not-a-netns";
  std::ofstream(file) << "x";
  for (const std::string& path :
       {file, dir.path(), std::string("/proc/self/ns/mnt"), dir.path() + "/missing"}) {
    auto r = run_command({.argv = {bin_path("ambientctl"), "inspect", "--netns", path}});
    REQUIRE(r);
    INFO(path << ": " << r->err);
    CHECK(r->exit_code == 2);
    CHECK_THAT(r->err, Catch::Contains(path));
    CHECK(r->out.empty());
  }
}

TEST_CASE("the admin socket refuses uid 65534 and keeps serving root", "[e2e][admin]") {
  SimNode node;
  Pod a = node.must_add_pod("a", "ambient-demo");
  // As deployed: the run dir (0750) and the socket (0600) keep it out.
  auto fs_refused = ambientctl(node, {"pods"}, 65534);
  CHECK(fs_refused.code == 3);
  CHECK_THAT(fs_refused.err, Catch::Contains("permission denied"));
  CHECK_THAT(fs_refused.err, Catch::Contains("uid 65534"));

  // With the file modes opened up, the peer check still refuses it.
  const std::string run = node.dir() + "/run";
  REQUIRE(::chmod(node.dir().c_str(), 0755) == 0);
  REQUIRE(::chmod(run.c_str(), 0755) == 0);
  REQUIRE(::chmod((run + "/admin.sock").c_str(), 0666) == 0);
  auto refused = ambientctl(node, {"pods"}, 65534);
  CHECK(refused.code == 3);
  CHECK_THAT(refused.err, Catch::Contains("refused by the agent (you are uid 65534)"));
  CHECK_THAT(refused.err, Catch::Contains("--admin-uid"));
  CHECK(refused.out.empty());
  CHECK_THAT(node.agent_log(),
             Catch::Contains("admin socket: refused a connection from uid 65534"));

  auto root = ambientctl(node, {"pods"});
  CHECK(root.code == 0);
  CHECK_THAT(root.out, Catch::Contains(a.ip));
}

namespace {

// `ambientctl trace ... -o json`, which must succeed.
json trace(SimNode& node, std::vector<std::string> args) {
  args.insert(args.begin(), "trace");
  return ambientctl_json(node, args);
}

// The pod's TCP sockets other than listeners (`ss`), one per line.
std::string tcp_sockets_left(SimNode& node, const Pod& p) {
  return node.pod_exec(p, {"ss", "-tanH", "state", "all", "exclude", "listening"});
}

}  // namespace

TEST_CASE(
    "ambientctl trace says who takes outbound, inbound, HBONE, DNS and ztunnel-marked "
    "traffic, and leaves nothing behind",
    "[e2e][admin][trace]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  // kubelet as root, as on most nodes: the agent's inbound probe (made in
  // its own netns, without CAP_SETUID) is still not taken for kubelet's and
  // SNATed.
  opts.kubelet_uid = 0;
  INFO("backend " << opts.backend);
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  UniqueFd app = listen_in(c, 8080);

  json out = trace(node, {"ambient-demo/a", "--to", b.ip + ":8080"});
  INFO(out.dump());
  CHECK(out["receiver"] == "ztunnel-outbound");
  CHECK(out["receiver_port"] == 15001);
  CHECK(out["original_destination"] == b.ip + ":8080");
  CHECK(out["enrolled"] == true);
  // The decision that took it: the eBPF counter, or the rule redirecting to 15001.
  CHECK_THAT(out["decisions"].dump(),
             Catch::Contains(opts.backend == kEbpf ? "\"outbound (+" : "15001 (+1)"));
  CHECK_FALSE(out["explanation"].get<std::string>().empty());

  json in = trace(node, {"ambient-demo/a", "--inbound", "--port", "8080"});
  INFO(in.dump());
  CHECK(in["receiver"] == "ztunnel-inbound");
  CHECK(in["receiver_port"] == 15006);
  CHECK(in["original_destination"] == a.ip + ":8080");
  CHECK_THAT(in["decisions"].dump(),
             Catch::Contains(opts.backend == kEbpf ? "\"inbound (+" : "15006 (+1)"));

  json hbone = trace(node, {"ambient-demo/a", "--inbound", "--port", "15008"});
  INFO(hbone.dump());
  CHECK(hbone["receiver"] == "ztunnel-hbone");
  CHECK(hbone["receiver_port"] == 15008);

  json dns_udp = trace(node, {"ambient-demo/a", "--to", node.gateway() + ":53", "--udp"});
  INFO(dns_udp.dump());
  CHECK(dns_udp["receiver"] == "ztunnel-dns");
  CHECK(dns_udp["receiver_port"] == 15053);
  CHECK(dns_udp["original_destination"] == node.gateway() + ":53");
  CHECK_THAT(dns_udp["decisions"].dump(),
             Catch::Contains(opts.backend == kEbpf ? "\"dns_query (+" : "15053"));

  json dns_tcp = trace(node, {"ambient-demo/a", "--to", node.gateway() + ":53"});
  INFO(dns_tcp.dump());
  CHECK(dns_tcp["receiver"] == "ztunnel-dns");
  CHECK(dns_tcp["receiver_port"] == 15053);

  // ztunnel's own mark is exempt: the connection leaves the pod and c's app answers.
  json marked = trace(node, {"ambient-demo/a", "--to", c.ip + ":8080", "--mark", "1337"});
  INFO(marked.dump());
  CHECK(marked["receiver"] == "app");
  CHECK(marked["receiver_port"] == 8080);
  CHECK_THAT(marked["explanation"].get<std::string>(), Catch::Contains("mark 0x539"));

  // A pod the agent does not enroll, by its netns: its app, and nobody.
  json plain = trace(node, {"plain/c", "--netns", c.netns_path, "--inbound", "--port", "8080"});
  INFO(plain.dump());
  CHECK(plain["receiver"] == "app");
  CHECK(plain["receiver_port"] == 8080);
  CHECK(plain["enrolled"] == false);
  json closed = trace(node, {"plain/c", "--netns", c.netns_path, "--inbound", "--port", "9"});
  CHECK(closed["receiver"] == "nobody");
  // --netns reaches no further than a CNI request: a runtime's path, never
  // the node's or the agent's own netns.
  for (const std::string& path : {std::string("/proc/self/ns/net"), std::string("/etc/hostname"),
                                  "/var/run/netns/" + node.node_netns()}) {
    auto refused = ambientctl(node, {"trace", "plain/c", "--netns", path, "--to", c.ip + ":8080"});
    INFO(path << ": " << refused.err);
    CHECK(refused.code == 2);
    CHECK_THAT(refused.err, Catch::Contains("refused"));
  }
  auto no_netns = ambientctl(node, {"trace", "plain/c", "--inbound", "--port", "8080"});
  CHECK(no_netns.code == 2);
  CHECK_THAT(no_netns.err, Catch::Contains("--netns"));

  // No probe socket is left in any state (SO_LINGER 0: no TIME_WAIT).
  CHECK(tcp_sockets_left(node, a).empty());
  CHECK(tcp_sockets_left(node, c).empty());
  CHECK(node.agent_running());
  // The redirection is as it was.
  CHECK(ambientctl(node, {"verify", "--all"}).code == 0);
}

namespace {

// The agent's periodic verify every second for one node's lifetime (the
// agent inherits the test's environment).
struct FastSelfVerify {
  FastSelfVerify() { ::setenv("AMBIENT_SELF_VERIFY_INTERVAL", "1", 1); }
  ~FastSelfVerify() { ::unsetenv("AMBIENT_SELF_VERIFY_INTERVAL"); }
};

// The value of one series in the agent's /metrics, 0 when absent.
double metric(SimNode& node, const std::string& series) {
  std::istringstream lines(node.node_http_get(15014, "/metrics"));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return 0;
}

}  // namespace

TEST_CASE(
    "the agent's own verify repairs a deleted rule and a removed fwmark rule, and reports "
    "it",
    "[e2e][admin]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  FastSelfVerify fast;
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  REQUIRE(ambientctl(node, {"verify", "ambient-demo/a"}).code == 0);

  // The event stream, watched while the drift happens.
  // No assertion on its thread: Catch2's are not thread-safe.
  Result<CommandResult> watched = make_error(Errc::Internal, "not run");
  std::thread watcher([&] {
    watched =
        run_command({.argv = ambientctl_argv(node, {"events", "-o", "json", "--timeout", "6"}),
                     .timeout = 30s});
  });
  std::this_thread::sleep_for(500ms);  // the stream is open before the drift
  delete_a_rule(node, a, opts.backend);
  node.pod_exec(a,
                {"ip", "rule", "del", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100"});
  const bool repaired = eventually(
      [&] {
        return ambientctl(node, {"verify", "ambient-demo/a"}).code == 0;
      },
      10s);
  watcher.join();
  REQUIRE(watched);
  const Ctl events{watched->exit_code, watched->out, watched->err};
  CHECK(repaired);
  CHECK(metric(node, "ambient_drift_repairs_total{kind=\"routing\"}") >= 1);
  CHECK_THAT(node.agent_log(), Catch::Contains("drift in the pod's redirection repaired"));
  json status = ambientctl_json(node, {"status"});
  CHECK(status["drift_repairs"].get<int>() >= 1);
  INFO(events.out << events.err);
  CHECK(events.code == 0);
  bool saw_repair = false;
  std::istringstream lines(events.out);
  for (std::string line; std::getline(lines, line);) {
    json e = json::parse(line);
    if (e["kind"] == "repaired" && e["name"] == "a") saw_repair = true;
  }
  CHECK(saw_repair);
  // The pod's traffic is redirected again.
  Pod b = node.must_add_pod("b", "ambient-demo");
  CHECK_THAT(in_pod_tcp(a, b.ip, 8080), Catch::Contains("port=15001"));
}

TEST_CASE("k8s: a repaired drift is a Kubernetes Event on the pod", "[e2e][admin][k8s]") {
  FastSelfVerify fast;
  NodeOptions opts;
  opts.kubernetes = true;
  SimNode node(opts);
  node.create_namespace("mesh", {{"istio.io/dataplane-mode", "ambient"}});
  Pod a = node.must_add_pod("a", "mesh");
  node.pod_exec(a,
                {"ip", "rule", "del", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100"});
  json found;
  const bool posted = eventually(
      [&] {
        json list = node.api_json("GET", "/api/v1/namespaces/mesh/events");
        for (const auto& e : list["items"]) {
          if (e["involvedObject"]["name"] == "a") found = e;
        }
        return !found.is_null();
      },
      10s);
  REQUIRE(posted);
  CHECK(found["reason"] == "AmbientRedirectionDriftRepaired");
  CHECK(found["type"] == "Warning");
  CHECK(found["involvedObject"]["uid"] == a.uid);
  CHECK_THAT(found["message"].get<std::string>(), Catch::Contains("rule fwmark"));
}
