// Kubernetes mode end to end: the fake API server (the one stand-in for
// kube-apiserver), the real CNI chain, the agent with upstream's default
// selectors, and the ztunnel emulator.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "process/process.h"
#include "support/backends.h"
#include "support/churn.h"
#include "support/files.h"
#include "support/sim_node.h"
#include "support/text.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// Whether the node's IPv4 probe set (ipset, the iptables backends') holds `ip`.
bool in_probe_set(SimNode& node, const std::string& ip) {
  std::istringstream lines(node.node_exec({"ipset", "list", "istio-inpod-probes-v4"}));
  for (std::string line; std::getline(lines, line);) {
    if (line.substr(0, line.find(' ')) == ip) return true;
  }
  return false;
}

void set_pod_ips(SimNode& node, const Pod& p, const json& ips) {
  json status = {{"status",
                  {{"podIP", ips.empty() ? json(nullptr) : ips[0]["ip"]},
                   {"podIPs", ips.empty() ? json(nullptr) : ips}}}};
  node.api_json("PATCH", "/api/v1/namespaces/" + p.ns + "/pods/" + p.name + "/status",
                status.dump(), "application/merge-patch+json");
}

const std::string kEnabledPatch =
    R"({"metadata":{"annotations":{"ambient.istio.io/redirection":"enabled"}}})";

// The requests the API server logged for exactly `path` (and `method`,
// when given), oldest first.
json logged_at(SimNode& node, const std::string& path, const std::string& method = "") {
  const json all = node.api_json(
      "GET", "/fake/requests" + (method.empty() ? "" : "?method=" + method))["requests"];
  json out = json::array();
  for (const auto& r : all) {
    if (r.value("path", "") == path) out.push_back(r);
  }
  return out;
}

}  // namespace

TEST_CASE(
    "k8s: a new pod in an ambient namespace is enrolled through CNI, one in a plain "
    "namespace is not",
    "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  node.create_namespace("plain");
  Pod a = node.must_add_pod("a", "mesh");
  Pod p = node.must_add_pod("p", "plain");
  CHECK(node.pod_has_our_rules(a));
  CHECK(eventually([&] { return node.ztunnel_has(a); }));
  auto w = node.ztunnel_state()["workloads"][a.uid]["info"];
  CHECK(w["name"] == "a");
  CHECK(w["namespace"] == "mesh");
  CHECK(w["serviceAccount"] == "sa-a");  // from the pod spec, as ztunnel matches it
  CHECK_FALSE(node.pod_has_our_rules(p));
  CHECK_FALSE(node.ztunnel_has(p));
  CHECK_THAT(in_pod_tcp(a, p.ip, 8080), Catch::Contains("port=15001"));
}

TEST_CASE(
    "k8s: labelling a namespace enrolls its running pods; removing the label unenrolls "
    "them",
    "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("later");
  node.create_namespace("plain");
  Pod a = node.must_add_pod("a", "later");
  Pod c = node.must_add_pod("c", "plain");
  CHECK_FALSE(node.pod_has_our_rules(a));

  node.label_namespace("later", "istio.io/dataplane-mode", "ambient");
  REQUIRE(eventually([&] { return node.ztunnel_has(a); }, 10s));
  CHECK(node.pod_has_our_rules(a));
  CHECK(eventually([&] { return node.redirection_annotation(a) == "enabled"; }, 5s));
  CHECK_THAT(in_pod_tcp(a, c.ip, 8080), Catch::Contains("port=15001"));  // captured
  CHECK_THAT(in_pod_tcp(c, a.ip, 8080), Catch::Contains("port=15006"));

  int dels = node.ztunnel_state().value("dels", 0);
  node.label_namespace("later", "istio.io/dataplane-mode", std::nullopt);
  REQUIRE(eventually([&] { return !node.ztunnel_has(a); }, 10s));
  CHECK(node.ztunnel_state().value("dels", 0) == dels + 1);
  CHECK(eventually([&] { return !node.pod_has_our_rules(a); }, 5s));
  CHECK(eventually([&] { return node.redirection_annotation(a).empty(); }, 5s));
  // No longer captured: nothing listens on 8080 in C, so the connection fails.
  CHECK(in_pod_tcp_not_captured(a, c.ip, 8080));
}

TEST_CASE(
    "k8s: with the agent stopped, plain pods start and ambient pods fail closed "
    "(plugin fallback over TLS)",
    "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  node.create_namespace("plain");
  node.stop_agent();
  Pod p;
  auto plain = node.add_pod("p", "plain", &p);
  CHECK(plain.ok);
  Pod m;
  auto mesh = node.add_pod("m", "mesh", &m);
  REQUIRE_FALSE(mesh.ok);
  CHECK_THAT(mesh.output["msg"].get<std::string>(),
             Catch::Contains("failed to contact node Istio CNI agent") &&
                 Catch::Contains("pluginevent.sock"));
  CHECK_FALSE(node.pod_has_our_rules(m));
  // The fallback asked the API server (over TLS, with the kubeconfig).
  auto reqs = node.api_json("GET", "/fake/requests?path=/api/v1/namespaces/mesh");
  bool saw_pod_get = false;
  for (const auto& r : reqs["requests"]) {
    if (r["method"] == "GET" && r["path"] == "/api/v1/namespaces/mesh/pods/m") saw_pod_get = true;
  }
  CHECK(saw_pod_get);
}

TEST_CASE("k8s: opted-out, hostNetwork, sidecar and excluded-namespace pods are never enrolled",
          "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  node.label_namespace("kube-system", "istio.io/dataplane-mode", "ambient");
  Pod none = node.must_add_pod("none", "mesh", {.labels = {{"istio.io/dataplane-mode", "none"}}});
  Pod sidecar = node.must_add_pod(
      "sidecar", "mesh", {.annotations = {{"sidecar.istio.io/status", R"({"containers":[]})"}}});
  Pod excluded = node.must_add_pod("dns", "kube-system");
  Pod hostnet;
  REQUIRE(node.add_pod("hostnet", "mesh", &hostnet, {.host_network = true}).ok);
  Pod control = node.must_add_pod("control", "mesh");
  REQUIRE(eventually([&] { return node.ztunnel_has(control); }));
  // Give the controller a moment to act on the others, then check it did not.
  std::this_thread::sleep_for(500ms);
  for (const Pod* p : {&none, &sidecar, &excluded}) {
    INFO(p->name);
    CHECK_FALSE(node.pod_has_our_rules(*p));
    CHECK_FALSE(node.ztunnel_has(*p));
    CHECK(node.redirection_annotation(*p).empty());
  }
  CHECK_FALSE(node.ztunnel_has(hostnet));
  CHECK(node.redirection_annotation(hostnet).empty());
}

TEST_CASE("k8s: an API server restart with expired versions (410) loses no event", "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("later");
  node.create_namespace("plain");
  Pod a = node.must_add_pod("a", "later");
  node.stop_apiserver();
  std::this_thread::sleep_for(300ms);  // the agent's watches fail and back off
  node.start_apiserver();
  // Everything before now is too old: the agent's resumed watches get 410.
  node.api_json("POST", "/fake/compact");
  node.label_namespace("later", "istio.io/dataplane-mode", "ambient");
  REQUIRE(eventually([&] { return node.ztunnel_has(a); }, 15s));
  CHECK(node.pod_has_our_rules(a));
  CHECK(eventually([&] { return node.redirection_annotation(a) == "enabled"; }, 5s));
  CHECK_THAT(node.agent_log(), Catch::Contains("(410), relisting"));
}

TEST_CASE(
    "k8s: an agent restart with 20 enrolled pods re-sends them all, duplicates nothing, "
    "and traffic never escapes",
    "[e2e][k8s]") {
  NodeOptions opts = kubernetes_node();
  opts.backend = GENERATE(as<std::string>{}, kIptablesNft, kEbpf);
  INFO("backend " << opts.backend);
  SimNode node(opts);
  node.create_namespace("mesh", kAmbientLabels);
  node.create_namespace("plain");
  std::vector<Pod> pods;
  pods.reserve(20);
  for (int i = 0; i < 20; ++i) pods.push_back(node.must_add_pod("p" + std::to_string(i), "mesh"));
  Pod c = node.must_add_pod("c", "plain");
  REQUIRE(eventually([&] { return node.ztunnel_state()["workloads"].size() == 20; }, 5s));
  for (const auto& p : pods)
    REQUIRE(eventually([&] { return node.redirection_annotation(p) == "enabled"; }, 5s));
  auto redirection_of = [&](const Pod& p) {
    return without_comments(node.pod_iptables(p)) + node.pod_filters(p);
  };
  const std::string before = redirection_of(pods[0]);
  const int adds_before = node.ztunnel_state().value("adds", 0);

  // A client loop in pod 0 runs across the restart.
  std::atomic<bool> done{false};
  std::atomic<int> captured{0}, escaped{0};
  std::string escape_sample;
  std::thread client([&] {
    while (!done) {
      auto r = in_pod(pods[0], [&]() -> Result<> {
        auto reply = tcp_exchange(c.ip, 8080);
        if (reply && reply->find("port=15001") != std::string::npos) {
          ++captured;
        } else {
          ++escaped;
          escape_sample = reply ? *reply : reply.error().describe();
        }
        return {};
      });
      (void)r;
      std::this_thread::sleep_for(5ms);
    }
  });
  std::this_thread::sleep_for(200ms);
  node.stop_agent();
  std::this_thread::sleep_for(200ms);
  node.start_agent();
  // ztunnel reconnects and gets a snapshot: 20 Adds (netns found in /proc).
  REQUIRE(
      eventually([&] { return node.ztunnel_state().value("adds", 0) >= adds_before + 20; }, 15s));
  CHECK(eventually([&] { return node.ztunnel_state().value("snapshot_received", false); }));
  std::this_thread::sleep_for(300ms);
  done = true;
  client.join();
  INFO("escaped sample: " << escape_sample);
  CHECK(escaped == 0);
  CHECK(captured > 10);
  auto state = node.ztunnel_state();
  CHECK(state["workloads"].size() == 20);
  CHECK(state.value("keeps", 0) == 0);
  for (const auto& p : pods) CHECK(state["workloads"][p.uid]["state"] == "Up");
  // Reconciled, nothing duplicated; eBPF filters now hold the new agent's
  // programs, replaced in place.
  CHECK(redirection_of(pods[0]) == before);
  CHECK_THAT(node.agent_log(), Catch::Contains("20 enrolled pods rebuilt (0 without a netns"));
}

TEST_CASE("k8s: a listing that fails at startup does not produce an empty snapshot", "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  Pod a = node.must_add_pod("a", "mesh");
  Pod b = node.must_add_pod("b", "mesh");
  REQUIRE(eventually([&] { return node.redirection_annotation(b) == "enabled"; }, 5s));
  node.stop_agent();
  // The next three pod listings fail.
  node.api_json("POST", "/fake/fail?path=/api/v1/pods&code=500&count=3&watch=false");
  node.start_agent();
  REQUIRE(eventually(
      [&] {
        return node.ztunnel_state().value("snapshot_received", false) &&
               node.ztunnel_state()["connected"] == true;
      },
      15s));
  std::this_thread::sleep_for(300ms);
  auto state = node.ztunnel_state();
  CHECK(state["workloads"].size() == 2);  // an empty snapshot would have drained both
  CHECK(state["workloads"][a.uid]["state"] == "Up");
  CHECK(state["workloads"][b.uid]["state"] == "Up");
  CHECK_THAT(node.agent_log(), Catch::Contains("HTTP 500"));
}

TEST_CASE("k8s: the redirection annotation has upstream's exact values and patches", "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  node.api_json("DELETE", "/fake/requests");
  Pod a = node.must_add_pod("a", "mesh");
  REQUIRE(eventually([&] { return node.redirection_annotation(a) == "enabled"; }, 5s));
  node.api_json("PATCH", "/api/v1/namespaces/mesh/pods/a",
                R"({"metadata":{"labels":{"istio.io/dataplane-mode":"none"}}})",
                "application/merge-patch+json");
  REQUIRE(eventually([&] { return node.redirection_annotation(a).empty(); }, 10s));
  CHECK_FALSE(node.pod_has_our_rules(a));
  std::vector<std::string> bodies;
  auto reqs = node.api_json("GET", "/fake/requests?method=PATCH")["requests"];
  INFO(reqs.dump());
  for (const auto& r : reqs) {
    const std::string path = r.value("path", "");
    const std::string body = r.value("body", "");
    if (path == "/api/v1/namespaces/mesh/pods/a/status" &&
        body.find("annotations") != std::string::npos) {
      CHECK(r.value("contentType", "") == "application/merge-patch+json");
      bodies.push_back(body);
    }
  }
  REQUIRE(bodies.size() == 2);
  CHECK(bodies[0] == R"({"metadata":{"annotations":{"ambient.istio.io/redirection":"enabled"}}})");
  CHECK(bodies[1] == R"({"metadata":{"annotations":{"ambient.istio.io/redirection":null}}})");
}

TEST_CASE("k8s: enrollments' annotation PATCHes go over a kept connection", "[e2e][k8s]") {
  // docs/node-agent.md#api-connections: a TLS handshake per PATCH cost the
  // agent and the API server more than the PATCH itself.
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  node.api_json("DELETE", "/fake/requests");
  constexpr int kPods = 6;
  for (int i = 0; i < kPods; ++i) node.must_add_pod("k" + std::to_string(i), "mesh");
  std::set<std::string> remotes;
  int patches = 0;
  auto reqs = node.api_json("GET", "/fake/requests?method=PATCH")["requests"];
  INFO(reqs.dump());
  for (const auto& r : reqs) {
    if (r.value("body", "") != kEnabledPatch) continue;
    ++patches;
    remotes.insert(r.value("remote", ""));
  }
  CHECK(patches == kPods);
  // One connection carries them all, one after the other; a second may
  // have been opened when another of the agent's requests held the first.
  CHECK(remotes.size() <= 2);
  CHECK_FALSE(remotes.contains(""));
}

TEST_CASE(
    "k8s: a kept API connection the server drops is replaced; only a request that may be repeated "
    "is sent again",
    "[e2e][k8s]") {
  // The test's own client is the agent's (lib/k8s/kube_https), talking to
  // the same server.
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  const std::string path = "/api/v1/namespaces/mesh";
  auto logged = [&](const std::string& method) { return logged_at(node, path, method); };
  node.api_json("DELETE", "/fake/requests");
  node.api_json("GET", path);
  node.api_json("GET", path);
  json reads = logged("GET");
  INFO(reads.dump());
  REQUIRE(reads.size() == 2);
  CHECK(reads[0]["remote"] == reads[1]["remote"]);

  // The server closes the kept connection as the next GET arrives: the GET
  // goes again on a new connection and succeeds.
  node.api_json("DELETE", "/fake/requests");
  node.api_json("POST", "/fake/fail?path=" + path + "&method=GET&drop=true");
  auto got = node.api("GET", path);
  REQUIRE(got);
  CHECK(got->status == 200);
  reads = logged("GET");
  INFO(reads.dump());
  REQUIRE(reads.size() == 2);
  CHECK(reads[0]["status"] == 0);
  CHECK(reads[1]["status"] == 200);
  CHECK(reads[0]["remote"] != reads[1]["remote"]);

  // A PATCH is not sent twice by the client: the caller learns that the
  // connection went and decides (the agent's annotation writers retry).
  node.api_json("DELETE", "/fake/requests");
  node.api_json("POST", "/fake/fail?path=" + path + "&method=PATCH&drop=true");
  auto patched = node.api("PATCH", path, R"({"metadata":{"labels":{"seen":"once"}}})",
                          "application/merge-patch+json");
  REQUIRE_FALSE(patched);
  CHECK_THAT(patched.error().describe(), Catch::Contains("kubernetes API") &&
                                             Catch::Contains(path) &&
                                             Catch::Contains("read response"));
  CHECK(logged("PATCH").size() == 1);
  // And the next request finds a working connection.
  CHECK(node.api_json("GET", path)["metadata"]["name"] == "mesh");
}

TEST_CASE(
    "k8s: kept API connections the server closed while idle are not used again, by the test's "
    "client or the agent",
    "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  node.must_add_pod("a", "mesh");  // the agent keeps the connection of its PATCH
  const std::string path = "/api/v1/namespaces/mesh";
  node.api_json("DELETE", "/fake/requests");
  node.api_json("GET", path);  // and this client its own
  auto closed = node.api_from_another_client("POST", "/fake/close-idle");
  REQUIRE(closed);
  REQUIRE(json::parse(closed->body)["closed"] == true);
  // A PATCH is never sent twice, so it succeeds only if the client saw,
  // before sending, that its kept connection had been closed.
  auto patched = node.api("PATCH", path, R"({"metadata":{"labels":{"seen":"once"}}})",
                          "application/merge-patch+json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
  const json reqs = logged_at(node, path);
  INFO(reqs.dump());
  REQUIRE(reqs.size() == 2);  // the GET, then the PATCH on a new connection
  CHECK(reqs[0]["remote"] != reqs[1]["remote"]);
  // The agent's next PATCH finds its kept connection closed too.
  Pod b = node.must_add_pod("b", "mesh");
  CHECK(node.redirection_annotation(b) == "enabled");
}

TEST_CASE("k8s: deleting a pod sends Del and forgets it", "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  Pod a = node.must_add_pod("a", "mesh");
  REQUIRE(eventually([&] { return node.ztunnel_has(a); }));
  node.api_json("DELETE", "/api/v1/namespaces/mesh/pods/a");
  CHECK(eventually([&] { return !node.ztunnel_has(a); }, 5s));
  CHECK(eventually([&] {
    return node.agent_log().find("pod mesh/a: removed from the mesh") != std::string::npos;
  }));
}

TEST_CASE("k8s: shutdown tells an upgrade (DaemonSet present) from an uninstall", "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("istio-system");
  node.stop_agent();
  CHECK_THAT(node.agent_log(), Catch::Contains("shutdown kind: uninstall"));
  node.create_agent_daemonset();
  node.start_agent();
  node.stop_agent();
  CHECK_THAT(node.agent_log(), Catch::Contains("shutdown kind: upgrade"));
}

// docs/redirection.md#ebpf-loading: the programs' pins outlive an upgrade,
// for the next agent to adopt, and go with an uninstall.
TEST_CASE("k8s: eBPF program pins stay for an upgrade and go with an uninstall", "[e2e][k8s]") {
  NodeOptions opts = kubernetes_node();
  opts.backend = kEbpf;
  SimNode node(opts);
  auto pinned_instances = [&] {
    size_t n = 0;
    for (const auto& owner : std::filesystem::directory_iterator(node.bpf_pin_dir() + "/ambient")) {
      for (const auto& e : std::filesystem::directory_iterator(owner.path())) {
        n += e.path().filename().string().rfind("prog-", 0) == 0;
      }
    }
    return n;
  };
  CHECK(pinned_instances() == 1);
  node.create_namespace("istio-system");
  node.stop_agent();  // no DaemonSet: an uninstall
  CHECK(pinned_instances() == 0);
  node.create_agent_daemonset();
  node.start_agent();
  CHECK(pinned_instances() == 1);
  node.stop_agent();  // an upgrade
  CHECK(pinned_instances() == 1);
  const size_t log_size = node.agent_log().size();
  node.start_agent();
  CHECK_THAT(node.agent_log().substr(log_size),
             Catch::Contains("programs adopted (pinned this boot"));
}

TEST_CASE("k8s: after a restart, an enrolled pod whose netns cannot be found is sent as Keep",
          "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  Pod a = node.must_add_pod("a", "mesh");
  Pod b = node.must_add_pod("b", "mesh");
  REQUIRE(eventually([&] { return node.redirection_annotation(b) == "enabled"; }, 5s));
  node.stop_agent();
  node.kill_sandbox(b);
  int keeps = node.ztunnel_state().value("keeps", 0);
  node.start_agent();
  REQUIRE(eventually([&] { return node.ztunnel_state().value("keeps", 0) == keeps + 1; }, 15s));
  auto state = node.ztunnel_state();
  CHECK(state["workloads"].size() == 2);  // ztunnel keeps b's proxy
  CHECK(state["workloads"][b.uid]["state"] == "Up");
  CHECK_THAT(node.agent_log(), Catch::Contains("2 enrolled pods rebuilt (1 without a netns"));
}

TEST_CASE("k8s: per-pod annotations override DNS capture and inbound capture", "[e2e][k8s]") {
  NodeOptions opts = kubernetes_node();
  opts.backend = GENERATE(kIptablesNft, kNftables, kEbpf);
  INFO("backend " << opts.backend);
  SimNode node(opts);  // DNS capture on globally
  node.create_namespace("mesh", kAmbientLabels);
  node.create_namespace("plain");
  Pod nodns = node.must_add_pod("nodns", "mesh",
                                {.annotations = {{"ambient.istio.io/dns-capture", "false"}}});
  Pod gw = node.must_add_pod("gw", "mesh",
                             {.annotations = {{"ambient.istio.io/bypass-inbound-capture", "true"},
                                              {"istio.io/reroute-virtual-interfaces", "tap0"}}});
  Pod c = node.must_add_pod("c", "plain");
  // DNS off for this pod: TCP 53 to the gateway is not sent to 15053 (and
  // nothing listens there, so it fails), while other egress is still captured.
  CHECK(in_pod_tcp_not_captured(nodns, node.gateway(), 53, "port=15053"));
  CHECK_THAT(in_pod_tcp(nodns, c.ip, 8080), Catch::Contains("port=15001"));
  // Ingress mode: inbound is not captured, outbound still is.
  CHECK(in_pod_tcp_not_captured(c, gw.ip, 8080, "port=15006"));
  CHECK_THAT(in_pod_tcp(gw, c.ip, 8080), Catch::Contains("port=15001"));
  // The virtual interface rule is there (eBPF has nothing to show until the
  // interface exists).
  if (opts.backend != kEbpf) {
    CHECK_THAT(node.pod_exec(gw, {"nft", "list", "ruleset"}), Catch::Contains("tap0"));
  }
}

TEST_CASE("k8s: the agent installs itself; SIGTERM uninstalls, unless it is an upgrade",
          "[e2e][k8s][installer]") {
  NodeOptions opts = kubernetes_node();
  opts.installer = true;
  SimNode node(opts);
  const std::string conf = node.dir() + "/host/net.d/10-bridge.conflist";
  const json original = json::parse(read_file(conf));
  auto installed = [&] {
    return read_file(conf).find("\"type\": \"istio-cni\"") != std::string::npos &&
           std::filesystem::exists(node.dir() + "/host/bin/istio-cni") &&
           std::filesystem::exists(node.kubeconfig());
  };
  REQUIRE(eventually(installed, 10s));
  CHECK_THAT(node.node_http_get(8000, "/readyz"),
             Catch::StartsWith("HTTP/1.1 200") && Catch::Contains("backend: "));

  // No DaemonSet: an uninstall. Our entry, binary and kubeconfig go; the
  // primary config is otherwise untouched.
  node.stop_agent();
  CHECK(json::parse(read_file(conf)) == original);
  CHECK_FALSE(std::filesystem::exists(node.dir() + "/host/bin/istio-cni"));

  // With the DaemonSet: an upgrade. Everything stays for the next agent.
  node.create_namespace("istio-system");
  node.create_agent_daemonset();
  node.start_agent();
  REQUIRE(eventually(installed, 10s));
  node.stop_agent();
  CHECK(read_file(conf).find("\"type\": \"istio-cni\"") != std::string::npos);
  CHECK(std::filesystem::exists(node.dir() + "/host/bin/istio-cni"));
}

// docs/node-agent.md#annotations: istiod treats a pod as captured only once
// it is annotated, so the annotation is in place before the ADD answers.
TEST_CASE("k8s: the pod is annotated enabled by the time the plugin's ADD returns",
          "[e2e][k8s][annotation]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  // The first PATCH of the pod's status is the agent's (the harness writes
  // the status only after the ADD): it is held back half a second.
  node.api_json(
      "POST",
      "/fake/fail?path=/api/v1/namespaces/mesh/pods/a/status&method=PATCH&code=0&delay=500");
  Pod a = node.must_add_pod("a", "mesh");
  CHECK(node.redirection_annotation(a) == "enabled");  // at once, no waiting
  auto reqs = node.api_json(
      "GET", "/fake/requests?method=PATCH&path=/api/v1/namespaces/mesh/pods/a/status")["requests"];
  INFO(reqs.dump());
  REQUIRE(reqs.size() >= 2);
  CHECK(reqs[0].value("body", "") == kEnabledPatch);  // the slow one, before the harness's
  CHECK(reqs[0].value("contentType", "") == "application/merge-patch+json");
  CHECK(node.ztunnel_has(a));
  CHECK(node.pod_has_our_rules(a));
}

TEST_CASE("k8s: an annotation the API server refuses fails the ADD and leaves nothing behind",
          "[e2e][k8s][annotation]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  node.api_json(
      "POST",
      "/fake/fail?path=/api/v1/namespaces/mesh/pods/b/status&method=PATCH&code=500&count=-1");
  const int dels = node.ztunnel_state().value("dels", 0);
  Pod b;
  auto added = node.add_pod("b", "mesh", &b);
  REQUIRE_FALSE(added.ok);
  CHECK_THAT(added.output.dump(), Catch::Contains("status code 500") &&
                                      Catch::Contains("ambient.istio.io/redirection=enabled") &&
                                      Catch::Contains("injected failure 500"));
  CHECK_FALSE(node.pod_has_our_rules(b));
  CHECK(eventually([&] { return !node.ztunnel_has(b); }));
  CHECK(node.ztunnel_state().value("dels", 0) == dels + 1);  // ztunnel had acked: told to forget
  CHECK(node.redirection_annotation(b).empty());
  // No probe-set entry carries the pod's UID.
  CHECK(node.node_exec({"ipset", "list", "istio-inpod-probes-v4"}).find(b.uid) ==
        std::string::npos);

  // With the API server taking patches again, the runtime's next sandbox
  // for the pod is enrolled.
  node.api_json("DELETE", "/fake/fail");
  Pod b2;
  REQUIRE(node.recreate_sandbox(b, &b2).ok);
  CHECK(node.redirection_annotation(b2) == "enabled");
  CHECK(node.pod_has_our_rules(b2));
  CHECK(eventually([&] { return node.ztunnel_has(b2); }));
}

// docs/node-agent.md#proc-scan and #decision-table: after a restart a pod is
// found by the UID in its cgroup even when its status has no IPs yet, and
// the probe set follows the IPs once they appear, and when they change.
TEST_CASE(
    "k8s: a pod adopted at startup before its status had IPs is found, and its probe-set "
    "entries follow its IPs",
    "[e2e][k8s][proc]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  Pod a = node.must_add_pod("a", "mesh");
  REQUIRE(eventually([&] { return node.redirection_annotation(a) == "enabled"; }, 5s));
  CHECK(eventually([&] { return in_probe_set(node, a.ip); }));
  node.stop_agent();
  set_pod_ips(node, a, json::array());  // kubelet has not reported them (yet)
  const int keeps = node.ztunnel_state().value("keeps", 0);
  node.start_agent();
  REQUIRE(eventually(
      [&] { return node.agent_log().find("enrolled pods rebuilt") != std::string::npos; }, 15s));
  CHECK_THAT(node.agent_log(), Catch::Contains("1 enrolled pods rebuilt (0 without a netns"));
  CHECK(eventually([&] { return node.ztunnel_state()["workloads"].contains(a.uid); }, 10s));
  CHECK(node.ztunnel_state().value("keeps", 0) == keeps);  // its netns was found: no Keep
  CHECK_FALSE(in_probe_set(node, a.ip));

  set_pod_ips(node, a, json::array({{{"ip", a.ip}}}));
  CHECK(eventually([&] { return in_probe_set(node, a.ip); }, 5s));
  // A changed IP moves the entry.
  set_pod_ips(node, a, json::array({{{"ip", "10.248.0.177"}}}));
  CHECK(eventually([&] { return in_probe_set(node, "10.248.0.177") && !in_probe_set(node, a.ip); },
                   5s));
}

// docs/node-agent.md#shutdown: a node the DaemonSet no longer targets gets
// no replacement agent, so leaving the plugin there would fail every pod.
TEST_CASE("k8s: shutdown on a node the DaemonSet no longer targets is an uninstall", "[e2e][k8s]") {
  SimNode node(kubernetes_node());
  node.create_namespace("istio-system");
  node.create_agent_daemonset({{"nodeSelector", {{"pool", "mesh"}}}});
  node.stop_agent();  // the node lacks pool=mesh
  CHECK_THAT(node.agent_log(), Catch::Contains("no longer targets node node-1") &&
                                   Catch::Contains("shutdown kind: uninstall"));

  node.api_json("PATCH", "/api/v1/nodes/node-1", R"({"metadata":{"labels":{"pool":"mesh"}}})",
                "application/merge-patch+json");
  node.start_agent();
  node.stop_agent();
  CHECK(count_of(node.agent_log(), "shutdown kind: upgrade") == 1);

  // A required node affinity that excludes the node by name.
  node.api_json(
      "PATCH", "/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-node",
      R"({"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":
          {"nodeSelectorTerms":[{"matchFields":[{"key":"metadata.name","operator":"NotIn","values":["node-1"]}]}]}}}}}}})",
      "application/merge-patch+json");
  node.start_agent();
  node.stop_agent();
  CHECK(count_of(node.agent_log(), "shutdown kind: uninstall") == 2);
  CHECK(count_of(node.agent_log(), "shutdown kind: upgrade") == 1);
}

TEST_CASE(
    "k8s: with the agent down and the API server down or failing, an ambient pod's ADD fails "
    "naming both errors; the replacement agent pod starts",
    "[e2e][k8s][fail-closed]") {
  const std::string failure = GENERATE("down", "500", "403");
  INFO("API server " << failure);
  SimNode node(kubernetes_node());
  node.create_namespace("ambient-demo", kAmbientLabels);
  node.create_namespace("istio-system");
  node.stop_agent();  // an upgrade in progress: the old agent is gone
  PodSpec broken_api;
  broken_api.before_add = [&] {
    if (failure == "down") {
      node.stop_apiserver();
      return;
    }
    auto r =
        node.api("POST", "/fake/fail?path=/api/v1/namespaces/&method=GET&count=-1&code=" + failure);
    REQUIRE(r);
    REQUIRE(r->status == 200);
  };

  SECTION("an ambient pod fails closed (docs/cni-plugin.md#fail-closed)") {
    Pod p;
    auto r = node.add_pod("app", "ambient-demo", &p, broken_api);
    REQUIRE_FALSE(r.ok);
    const std::string msg = r.output.value("msg", "");
    CHECK_THAT(msg,
               Catch::Contains("failed to contact node Istio CNI agent") &&
                   Catch::Contains("pluginevent.sock") &&
                   Catch::Contains("the API server could not tell whether the pod is ambient"));
    if (failure == "down") {
      CHECK_THAT(msg, Catch::Contains("connect") || Catch::Contains("refused"));
    } else {
      CHECK_THAT(msg, Catch::Contains(failure));
    }
    CHECK_FALSE(node.pod_has_our_rules(p));
  }
  SECTION("the agent's own replacement pod starts, unredirected") {
    Pod p;
    auto r = node.add_pod("istio-cni-node-7xk2p", "istio-system", &p, broken_api);
    REQUIRE(r.ok);
    CHECK_FALSE(p.ip.empty());
    CHECK_FALSE(node.pod_has_our_rules(p));
  }
}

namespace {

// /metrics as a Prometheus server reads it: the body through
// test/tools/prom-parse (Prometheus' own Python parser), series -> value.
std::map<std::string, double> scrape_metrics(SimNode& node) {
  const std::string response = node.node_http_get(15014, "/metrics");
  INFO(response.substr(0, 2000));
  REQUIRE_THAT(response, Catch::StartsWith("HTTP/1.1 200"));
  const size_t body = response.find("\r\n\r\n");
  REQUIRE(body != std::string::npos);
  auto parsed = run_command({.argv = {std::string(AMBIENT_TEST_TOOLS_DIR) + "/prom-parse"},
                             .stdin_data = response.substr(body + 4)});
  REQUIRE(parsed);
  INFO(parsed->err);
  REQUIRE(parsed->exit_code == 0);
  std::map<std::string, double> out;
  std::istringstream lines(parsed->out);
  for (std::string line; std::getline(lines, line);) {
    const size_t space = line.rfind(' ');
    REQUIRE(space != std::string::npos);
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

double series(const std::map<std::string, double>& scraped, const std::string& name) {
  INFO(name);
  auto it = scraped.find(name);
  REQUIRE(it != scraped.end());
  return it->second;
}

}  // namespace

// docs/node-agent.md#metrics
TEST_CASE("k8s: /metrics parses as Prometheus text and counts installs, events and /cmdadd",
          "[e2e][k8s][metrics]") {
  NodeOptions opts = kubernetes_node();
  opts.installer = true;
  SimNode node(opts);
  node.create_namespace("mesh", kAmbientLabels);
  REQUIRE(eventually(
      [&] { return node.node_http_get(8000, "/readyz").starts_with("HTTP/1.1 200"); }, 10s));
  const std::string answered = R"(istio_cni_plugin_requests_total{response_code="200"})";
  const double answered_before = series(scrape_metrics(node), answered);
  Pod a = node.must_add_pod("a", "mesh");
  REQUIRE(eventually([&] { return node.ztunnel_has(a); }));

  const auto m = scrape_metrics(node);
  CHECK(series(m, answered) - answered_before == 1);
  CHECK(series(m, R"(istio_cni_installs_total{result="SUCCESS"})") >= 1);
  CHECK(series(m, "istio_cni_install_ready") == 1);
  CHECK(series(m, R"(nodeagent_reconcile_events_total{type="add"})") > 0);
  CHECK(series(m, "ztunnel_connected") == 1);
  CHECK(series(m, "ambient_enrolled_pods") == 1);
  CHECK(series(m, "process_resident_memory_bytes") > 0);
  CHECK(series(m, "process_open_fds") > 0);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const double started = series(m, "process_start_time_seconds");
  CHECK(started <= now + 1);
  CHECK(started > now - 3600);

  // A label change: the namespace's Update, and one for its pod re-examined.
  const std::string updates = R"(nodeagent_reconcile_events_total{type="update"})";
  const double updates_before = series(m, updates);
  node.label_namespace("mesh", "team", "a");
  CHECK(eventually([&] { return series(scrape_metrics(node), updates) >= updates_before + 2; }));
}

// docs/reliability.md#faults: a removal is several steps (the pod's rules
// and routing, ztunnel's Del, the probe set, the annotation). Killed after
// any of them, the agent finishes the removal once restarted: it adopts
// the pod the annotation still names and its worker then unenrolls it.
TEST_CASE("k8s: an agent killed at any step of a removal finishes it once restarted",
          "[e2e][k8s][fault]") {
  NodeOptions opts = kubernetes_node();
  opts.backend = GENERATE(from_range(kBackends));
  const std::string point =
      GENERATE(as<std::string>{}, "remove-mid-backend", "remove-after-backend", "remove-after-zds",
               "remove-after-probe-set");
  INFO("backend " << opts.backend << ", crash " << point);
  SimNode node(opts);
  node.create_namespace("mesh", kAmbientLabels);
  node.create_namespace("leaving", kAmbientLabels);
  Pod stay = node.must_add_pod("stay", "mesh");
  Pod a = node.must_add_pod("a", "leaving");
  REQUIRE(eventually(
      [&] { return node.ztunnel_has(a) && node.redirection_annotation(a) == "enabled"; }));
  const std::string enrolled_rules = node.pod_redirection(stay);
  REQUIRE(node.pod_redirection(a) == enrolled_rules);

  node.stop_agent();
  node.set_crash_point(point);
  node.start_agent();
  node.label_namespace("leaving", "istio.io/dataplane-mode", std::nullopt);
  REQUIRE(node.wait_agent_exit(10s) == 86);

  node.set_crash_point("");
  node.start_agent();
  const auto host = [&] {
    return node.node_exec({"nft", "list", "ruleset"}) + node.node_exec({"ipset", "list"}) +
           node.node_exec({"iptables-legacy-save"});
  };
  CHECK(eventually(
      [&] {
        return !node.ztunnel_has(a) && node.redirection_annotation(a).empty() &&
               !node.pod_has_our_rules(a) && !has_address(host(), a.ip);
      },
      15s, 100ms));
  CHECK(in_pod_tcp_not_captured(a, node.gateway(), 8080));
  if (opts.backend == kEbpf) {  // a's pinned TIME_WAIT link went too
    struct stat st {};
    REQUIRE(::stat(a.netns_path.c_str(), &st) == 0);
    for (const auto& f : files_under(node.bpf_pin_dir() + "/ambient")) {
      CHECK(f.find("netns-" + std::to_string(st.st_ino)) == std::string::npos);
    }
  }
  // The pod that stays is as it was, and still captured.
  CHECK(node.ztunnel_has(stay));
  CHECK(node.redirection_annotation(stay) == "enabled");
  CHECK(node.pod_redirection(stay) == enrolled_rules);
  CHECK(has_address(host(), stay.ip));
  CHECK_THAT(in_pod_tcp(stay, node.gateway(), 8080), Catch::Contains("port=15001"));
}
