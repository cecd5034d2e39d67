// Pods made by containerd through CRI, as kubelet has them made: the
// runtime's own ordering and arguments reach our plugin (a DEL on Stop, a
// second one with no netns on Remove, sandboxes recreated for the same pod,
// the pod UID in the pause process's cgroup). Kubernetes mode, the fake API
// server, the chart's topology; traffic from real busybox containers.
#include <catch2/catch.hpp>
#include <sstream>
#include <thread>

#include "support/backends.h"
#include "support/containerd.h"
#include "support/require_ok.h"
#include "support/sim_node.h"
#include "support/text.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

NodeOptions runtime_opts(const std::string& backend, bool kubernetes = true,
                         PrimaryCni primary = PrimaryCni::Bridge) {
  NodeOptions o;
  o.primary = primary;
  o.kubernetes = kubernetes;
  o.containerd = true;
  o.backend = backend;
  return o;
}

// The node, with an ambient namespace and a plain one.
struct RuntimeNode {
  SimNode node;
  explicit RuntimeNode(const std::string& backend, bool kubernetes = true,
                       PrimaryCni primary = PrimaryCni::Bridge)
      : node(runtime_opts(backend, kubernetes, primary)) {
    if (!kubernetes) return;  // standalone: the agent enrolls ambient-demo
    node.create_namespace("ambient-demo", kAmbientLabels);
    node.create_namespace("plain");
  }
};

// Whether the node's IPv4 probe set holds `ip`, for either backend family.
bool in_probe_set(SimNode& node, const std::string& backend, const std::string& ip) {
  if (backend == kNftables) {
    return node.node_exec({"nft", "list", "ruleset"}).find(ip) != std::string::npos;
  }
  std::istringstream lines(node.node_exec({"ipset", "list", "istio-inpod-probes-v4"}));
  for (std::string line; std::getline(lines, line);) {
    if (line.substr(0, line.find(' ')) == ip) return true;
  }
  return false;
}

// One TCP exchange from a container: what the peer answered.
std::string container_tcp(SimNode& node, const std::string& ctr, const std::string& ip, int port) {
  return node.container_exec(ctr, {"nc", "-w", "3", ip, std::to_string(port)}).second;
}

}  // namespace

TEST_CASE("runtime: a pod made by RunPodSandbox is enrolled; its containers' traffic is captured",
          "[runtime]") {
  const std::string backend = GENERATE(as<std::string>{}, kNftables, kIptablesNft);
  const bool kubernetes = GENERATE(true, false);
  INFO("backend " << backend << (kubernetes ? ", Kubernetes mode" : ", standalone"));
  RuntimeNode rn(backend, kubernetes);
  SimNode& node = rn.node;
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  CHECK(eventually([&] { return node.ztunnel_has(a); }));
  CHECK_FALSE(node.ztunnel_has(c));
  CHECK(node.pod_has_our_rules(a));
  CHECK_FALSE(node.pod_has_our_rules(c));
  CHECK(in_probe_set(node, backend, a.ip));
  const std::string in_a = node.start_container(a), in_c = node.start_container(c);

  // Outbound from a container: A's ztunnel listener 15001, original destination kept.
  CHECK_THAT(container_tcp(node, in_a, c.ip, 8080), Catch::Contains("port=15001"));
  auto out = find_record(node, 15001, a.ip);
  REQUIRE(out);
  CHECK((*out)["uid"] == a.uid);
  CHECK((*out)["orig_dst"] == c.ip + ":8080");
  // Inbound from another pod's container: 15006.
  CHECK_THAT(container_tcp(node, in_c, a.ip, 9090), Catch::Contains("port=15006"));
  // DNS over UDP and TCP: 15053.
  // busybox's nc has no UDP; nslookup sends a real query (the emulator's
  // answer is no DNS message, so only where the query went is checked).
  (void)node.container_exec(in_a, {"nslookup", "example.test", "10.248.0.1"});
  auto dns = find_record(node, 15053, a.ip, "udp");
  REQUIRE(dns);
  CHECK((*dns)["uid"] == a.uid);
  CHECK_THAT(container_tcp(node, in_a, "10.248.0.1", 53), Catch::Contains("port=15053"));
  // The pod outside the mesh reaches its peer directly.
  CHECK(container_tcp(node, in_c, c.ip, 15001).find("port=15001") == std::string::npos);
}

TEST_CASE(
    "runtime: StopPodSandbox removes the pod from ztunnel and the probe set; RemovePodSandbox's "
    "DEL without a netns succeeds",
    "[runtime]") {
  RuntimeNode rn(kIptablesNft);
  SimNode& node = rn.node;
  Pod a = node.must_add_pod("a", "ambient-demo");
  REQUIRE(eventually([&] { return node.ztunnel_has(a); }));
  REQUIRE(in_probe_set(node, kIptablesNft, a.ip));
  const int dels_before = node.ztunnel_state().value("dels", 0);

  auto stopped = node.stop_sandbox(a);
  REQUIRE(stopped.ok);
  CHECK(eventually([&] { return !node.ztunnel_has(a); }));
  CHECK_FALSE(in_probe_set(node, kIptablesNft, a.ip));

  auto removed = node.remove_sandbox(a);  // DEL again, CNI_NETNS empty, no prevResult
  CHECK(removed.ok);
  INFO(removed.output.dump());
  std::this_thread::sleep_for(200ms);
  CHECK(node.ztunnel_state().value("dels", 0) == dels_before + 1);
}

TEST_CASE(
    "runtime: a sandbox recreated for the same pod keeps its redirection when the old sandbox is "
    "removed (docs/node-agent.md#removal)",
    "[runtime]") {
  RuntimeNode rn(kNftables);
  SimNode& node = rn.node;
  Pod old;
  REQUIRE(node.add_pod("a", "ambient-demo", &old).ok);
  Pod c = node.must_add_pod("c", "plain");
  REQUIRE(node.stop_sandbox(old).ok);  // kubelet stops the old sandbox first
  Pod now;
  auto r = node.recreate_sandbox(old, &now);
  REQUIRE(r.ok);
  REQUIRE(now.container_id != old.container_id);
  REQUIRE(eventually([&] { return node.ztunnel_has(now); }));
  const int dels_before = node.ztunnel_state().value("dels", 0);

  REQUIRE(node.remove_sandbox(old).ok);  // the old sandbox's DEL, same pod UID, no netns
  std::this_thread::sleep_for(200ms);
  CHECK(node.ztunnel_state().value("dels", 0) == dels_before);
  CHECK(node.ztunnel_has(now));
  CHECK(node.pod_has_our_rules(now));
  const std::string in_now = node.start_container(now);
  CHECK_THAT(container_tcp(node, in_now, c.ip, 8080), Catch::Contains("port=15001"));
}

TEST_CASE(
    "runtime: an agent upgrade finds containerd's pods by their pause processes' cgroups and "
    "installs nothing twice",
    "[runtime]") {
  RuntimeNode rn(kIptablesNft);
  SimNode& node = rn.node;
  node.create_namespace("istio-system");
  node.create_agent_daemonset();  // the shutdown is an upgrade: state stays
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  REQUIRE(eventually([&] { return node.ztunnel_has(a); }));
  const std::string rules_before = node.pod_iptables(a);

  node.stop_agent();
  CHECK(node.pod_has_our_rules(a));  // traffic stays captured while no agent runs
  node.start_agent();
  node.wait_ztunnel_ready();
  CHECK(eventually([&] { return node.ztunnel_has(a); }));
  // Found through /proc: ztunnel got the netns, not a Keep for a lost one.
  CHECK(node.ztunnel_state()["workloads"][a.uid].value("state", "") == "Up");
  CHECK(count_of(node.pod_iptables(a), "-j ISTIO_OUTPUT") ==
        count_of(rules_before, "-j ISTIO_OUTPUT"));
  const std::string in_a = node.start_container(a);
  CHECK_THAT(container_tcp(node, in_a, c.ip, 8080), Catch::Contains("port=15001"));
}

TEST_CASE("runtime: after a containerd restart pods keep their redirection and new pods enroll",
          "[runtime]") {
  RuntimeNode rn(kNftables);
  SimNode& node = rn.node;
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  const std::string in_a = node.start_container(a);
  AMBIENT_REQUIRE_OK(node.containerd().restart());
  CHECK_THAT(container_tcp(node, in_a, c.ip, 8080), Catch::Contains("port=15001"));
  Pod b = node.must_add_pod("b", "ambient-demo");
  CHECK(eventually([&] { return node.ztunnel_has(b); }));
  const std::string in_b = node.start_container(b);
  CHECK_THAT(container_tcp(node, in_b, c.ip, 8080), Catch::Contains("port=15001"));
}

TEST_CASE(
    "runtime: a RunPodSandbox that fails after our ADD (a later plugin fails) leaves nothing of "
    "ours",
    "[runtime]") {
  RuntimeNode rn(kIptablesNft);
  SimNode& node = rn.node;
  // A plugin after ours that always fails: tuning with a sysctl that does not exist.
  node.rewrite_conflist([](json& c) {
    c["plugins"].push_back({{"type", "tuning"}, {"sysctl", {{"net.ipv4.no_such_knob", "1"}}}});
  });
  Pod a;
  auto r = node.add_pod("a", "ambient-demo", &a);
  REQUIRE_FALSE(r.ok);
  CHECK_THAT(r.output.dump(), Catch::Contains("tuning"));
  // containerd's cleanup DEL reached the agent: nothing enrolled, nothing in the probe set.
  CHECK(eventually([&] { return !node.ztunnel_has(a); }));
  CHECK(node.node_exec({"ipset", "list", "istio-inpod-probes-v4"}).find("10.248.0.") ==
        std::string::npos);
  CHECK(eventually([&] {  // the pod lives on without a sandbox: not marked captured
    return node.api_json("GET", "/api/v1/namespaces/ambient-demo/pods/a")["metadata"]
               .value("annotations", json::object())
               .value("ambient.istio.io/redirection", "") != "enabled";
  }));
  CHECK(node.containerd().cri().list_pod_sandbox()->empty());

  // With the chain fixed, the same pod starts and is enrolled.
  node.rewrite_conflist([](json& c) { c["plugins"].erase(c["plugins"].size() - 1); });
  Pod again;
  REQUIRE(node.recreate_sandbox(a, &again).ok);  // kubelet's next attempt
  CHECK(eventually([&] { return node.ztunnel_has(again); }));
  CHECK(eventually([&] {
    return node.api_json("GET", "/api/v1/namespaces/ambient-demo/pods/a")["metadata"]
               .value("annotations", json::object())
               .value("ambient.istio.io/redirection", "") == "enabled";
  }));
}

// docs/architecture.md#testing: a primary CNI of another shape, through the runtime.
TEST_CASE("runtime: under ptp (a veth per pod, routed by the node) containers' traffic is captured",
          "[runtime][shapes]") {
  RuntimeNode rn(kNftables, true, PrimaryCni::Ptp);
  SimNode& node = rn.node;
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  CHECK(eventually([&] { return node.ztunnel_has(a); }));
  const std::string in_a = node.start_container(a), in_c = node.start_container(c);
  CHECK_THAT(container_tcp(node, in_a, c.ip, 8080), Catch::Contains("port=15001"));
  auto out = find_record(node, 15001, a.ip);
  REQUIRE(out);
  CHECK((*out)["orig_dst"] == c.ip + ":8080");
  CHECK_THAT(container_tcp(node, in_c, a.ip, 9090), Catch::Contains("port=15006"));
  CHECK_THAT(container_tcp(node, in_a, node.gateway(), 53), Catch::Contains("port=15053"));
}
