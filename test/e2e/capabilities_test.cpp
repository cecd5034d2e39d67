// docs/node-agent.md#capabilities: the chart runs the agent as root with a
// few capabilities, not privileged. Every other e2e case runs the agent
// with exactly that set (NodeOptions::agent_capabilities); these drop one
// capability at a time and show the operation that needs it, and that a
// pod's ADD then fails closed: an error, never a pod started without its
// redirection.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "support/backends.h"
#include "support/files.h"
#include "support/sim_node.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

namespace fs = std::filesystem;

NodeOptions without(const std::string& cap, NodeOptions opts = {}) {
  std::vector<std::string> caps = chart_capabilities(opts.backend);
  REQUIRE(std::erase(caps, cap) == 1);  // only what the chart grants is dropped
  opts.agent_capabilities = caps;
  return opts;
}

// An agent that cannot do its start-up work: the node is made without
// waiting for it, and no ztunnel (nothing would serve it).
NodeOptions not_starting(NodeOptions opts) {
  opts.wait_for_agent = false;
  opts.start_ztunnel = false;
  return opts;
}

bool log_has(SimNode& node, const std::string& text, std::chrono::milliseconds within = 10s) {
  return eventually([&] { return node.agent_log().find(text) != std::string::npos; }, within);
}

// An ADD into an enrolled namespace must fail, and leave nothing of ours in
// the pod: the runtime retries it, the pod does not start unredirected.
void check_add_fails_closed(SimNode& node, const std::string& name) {
  Pod p;
  AddResult r = node.add_pod(name, "ambient-demo", &p);
  INFO("ADD: " << r.output.dump() << "\n" << r.stderr_text);
  CHECK_FALSE(r.ok);
  CHECK_FALSE(node.pod_has_our_rules(p));
}

}  // namespace

// Rules, routes, probe sets and tc filters are all netlink writes the
// kernel allows only with CAP_NET_ADMIN; the host side is the first.
TEST_CASE("caps: without NET_ADMIN the host rules cannot be written; ADDs fail closed",
          "[e2e][security][caps]") {
  SimNode node(not_starting(without("NET_ADMIN")));
  CHECK(log_has(node, "host rules attempt 1: create ipset: "));
  CHECK(log_has(node, "Kernel error received: Operation not permitted"));
  CHECK_FALSE(fs::exists(node.agent_socket()));  // it never serves half set up
  check_add_fails_closed(node, "a");
}

// setns(CLONE_NEWNET) needs CAP_SYS_ADMIN: no pod's netns, nor the node's,
// can be entered.
TEST_CASE("caps: without SYS_ADMIN no netns can be entered; ADDs fail closed",
          "[e2e][security][caps]") {
  SimNode node(not_starting(without("SYS_ADMIN")));
  CHECK(log_has(node, "setns(/var/run/netns/" + node.node_netns() + "): Operation not permitted"));
  CHECK_FALSE(fs::exists(node.agent_socket()));
  check_add_fails_closed(node, "a");
}

// iptables opens a raw socket, which needs CAP_NET_RAW, for
// iptables-legacy's tables (libiptc) and, under either iptables, for the
// `-m set` match of the host's probe SNAT rule (xt_set asks ipset's version
// over it). Native nftables and its sets use netlink only and work without
// it; eBPF's host side is iptables-nft.
TEST_CASE("caps: NET_RAW is needed by the iptables backends only", "[e2e][security][caps]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  if (opts.backend != kNftables) {
    SimNode node(not_starting(without("NET_RAW", opts)));
    CHECK(log_has(node, "host rules attempt 1: "));
    CHECK(log_has(node, opts.backend == kIptablesLegacy ? "Permission denied (you must be root)"
                                                        : "Can't open socket to ipset"));
    CHECK_FALSE(fs::exists(node.agent_socket()));
    check_add_fails_closed(node, "a");
    return;
  }
  SimNode node(without("NET_RAW", opts));
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  CHECK(node.pod_has_our_rules(a));
  CHECK_THAT(in_pod_tcp(a, b.ip, 8080), Catch::Contains("port=15001"));
}

// Opening /proc/<pid>/ns/net of a process whose capabilities are not a
// subset of the agent's (a pod's sandbox, the node's init) is a ptrace
// access check, which only CAP_SYS_PTRACE passes. An ADD names the pod's
// netns by path and needs none; finding a running pod's netns does
// (docs/node-agent.md#proc-scan), as does the chart's host netns,
// /host/proc/1/ns/net.
TEST_CASE("caps: without SYS_PTRACE a running pod's netns cannot be found in /proc",
          "[e2e][security][caps]") {
  NodeOptions opts = without("SYS_PTRACE");
  opts.kubernetes = true;
  SimNode node(opts);
  node.create_namespace("later");
  Pod a = node.must_add_pod("a", "later");  // not ambient yet: nothing to enroll
  node.label_namespace("later", "istio.io/dataplane-mode", "ambient");
  CHECK(log_has(node, "processes could not be read (stat "));
  CHECK(log_has(node, "/ns/net: Permission denied"));
  CHECK(log_has(node, "needs CAP_SYS_PTRACE"));
  CHECK_FALSE(eventually([&] { return node.ztunnel_state()["workloads"].contains(a.uid); }, 3s));
  CHECK_FALSE(node.pod_has_our_rules(a));
}

// Root without CAP_DAC_OVERRIDE is held to a directory's mode bits like
// any user: a host CNI directory owned by another user (istio/istio#53849)
// cannot be written. The installer stays not ready and says which
// directory; the node's chain is left as it was.
TEST_CASE("caps: without DAC_OVERRIDE a CNI dir owned by another user cannot be written",
          "[e2e][security][caps]") {
  const bool dac_override = GENERATE(true, false);
  INFO((dac_override ? "chart's set" : "without DAC_OVERRIDE"));
  NodeOptions opts = dac_override ? NodeOptions{} : without("DAC_OVERRIDE");
  opts.installer = true;
  SimNode node(opts);
  const std::string conf = node.conflist_path();
  REQUIRE(eventually([&] { return read_file(conf).find("istio-cni") != std::string::npos; }, 5s));
  node.stop_agent();  // no DaemonSet: an uninstall, our entry and binary go
  REQUIRE(read_file(conf).find("istio-cni") == std::string::npos);
  // The node's CNI directories as some installs leave them: a user's, 0755.
  for (const char* d : {"/host/net.d", "/host/bin"}) {
    const std::string dir = node.dir() + d;
    REQUIRE(::chown(dir.c_str(), 1000, 1000) == 0);
    for (const auto& e : fs::directory_iterator(dir)) ::lchown(e.path().c_str(), 1000, 1000);
  }
  const std::string before = read_file(conf);
  node.start_agent();
  if (dac_override) {
    CHECK(eventually([&] { return read_file(conf).find("istio-cni") != std::string::npos; }, 5s));
    CHECK(fs::exists(node.dir() + "/host/bin/istio-cni"));
    return;
  }
  CHECK(log_has(node, "install istio-cni into " + node.dir() + "/host/bin: create "));
  CHECK(log_has(node, ": Permission denied"));
  CHECK_THAT(node.node_http_get(8000, "/readyz"), !Catch::StartsWith("HTTP/1.1 200"));
  CHECK(read_file(conf) == before);
  CHECK_FALSE(fs::exists(node.dir() + "/host/bin/istio-cni"));
}
