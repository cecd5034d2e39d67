// The API server failing under a running node (docs/reliability.md#faults):
// down when the agent starts, watches cut mid-stream, 410 Gone over and
// over, answers held back for seconds. The agent retries with a bounded
// rate, loses no event, and every ADD either completes or fails naming the
// pod and the step within the plugin's budget.
#include <catch2/catch.hpp>
#include <chrono>
#include <sstream>
#include <thread>

#include "support/sim_node.h"
#include "support/text.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

bool ready(SimNode& node) {
  return node.node_http_get(8000, "/readyz").starts_with("HTTP/1.1 200");
}

// Requests the API server logged under `path` since sequence number `since`.
json requests_since(SimNode& node, const std::string& path, int64_t since) {
  return node.api_json(
      "GET", "/fake/requests?path=" + path + "&since=" + std::to_string(since))["requests"];
}

// The sequence number of the API server's latest logged request.
int64_t last_request(SimNode& node) {
  auto all = node.api_json("GET", "/fake/requests")["requests"];
  return all.empty() ? 0 : all.back().value("seq", int64_t{0});
}

// The agent's log lines about its informers, for a failure message.
std::string informer_lines(SimNode& node) {
  std::istringstream lines(node.agent_log());
  std::string out;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("informer ") != std::string::npos) out += line + "\n";
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE(
    "k8s fault: an agent started while the API server is down gives ztunnel no snapshot, then "
    "serves once it is back",
    "[e2e][k8s][fault]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  Pod a = node.must_add_pod("a", "mesh");
  REQUIRE(eventually([&] { return node.ztunnel_has(a); }));
  // The node restarts: agent, ztunnel and API server all go, and the API
  // server is the last to come back.
  node.stop_ztunnel();
  node.stop_agent();
  node.stop_apiserver();
  const size_t log_from = node.agent_log().size();  // this start's lines only
  node.start_agent();
  node.start_ztunnel();
  std::this_thread::sleep_for(2s);
  // Not ready, and ztunnel waits in the backlog: an empty snapshot now
  // would drain every pod of the node.
  CHECK(node.agent_running());
  CHECK_FALSE(ready(node));
  CHECK_FALSE(node.ztunnel_state().value("snapshot_received", false));
  const std::string log = node.agent_log().substr(log_from);
  CHECK_THAT(log, Catch::Contains("informer pods: ") && Catch::Contains("Connection refused") &&
                      Catch::Contains("waiting for the pod and namespace caches"));
  // Backing off, not spinning: 200 ms doubling, so a handful of attempts.
  const size_t attempts = count_of(log, "informer pods: ");
  CHECK(attempts >= 2);
  CHECK(attempts <= 6);

  const auto back = std::chrono::steady_clock::now();
  node.start_apiserver();
  REQUIRE(eventually([&] { return ready(node); }, 15s));
  const double recovered_s = seconds_since(back);
  CHECK(eventually([&] { return node.ztunnel_has(a); }));
  CHECK(node.ztunnel_state()["workloads"].size() == 1);
  Pod b = node.must_add_pod("b", "mesh");
  CHECK(eventually([&] { return node.ztunnel_has(b); }));
  CHECK(node.pod_has_our_rules(b));
  WARN("pod informer attempts in 2 s without an API server: "
       << attempts << "; ready " << recovered_s << " s after it came back");
}

TEST_CASE("k8s fault: watches cut while a namespace's label flips lose no event",
          "[e2e][k8s][fault]") {
  SimNode node(kubernetes_node());
  node.create_namespace("flip");
  Pod a = node.must_add_pod("a", "flip");
  Pod b = node.must_add_pod("b", "flip");
  int64_t since = last_request(node);
  // Each flip lands while the watches are down; the last one enrolls.
  for (int i = 0; i < 7; ++i) {
    node.api_json("POST", "/fake/close-watches");
    node.label_namespace("flip", "istio.io/dataplane-mode",
                         i % 2 == 0 ? std::optional<std::string>("ambient") : std::nullopt);
    std::this_thread::sleep_for(100ms);
  }
  CHECK(eventually([&] { return node.ztunnel_has(a) && node.ztunnel_has(b); }, 10s));
  CHECK(node.pod_has_our_rules(a));
  node.api_json("POST", "/fake/close-watches");
  node.label_namespace("flip", "istio.io/dataplane-mode", std::nullopt);
  CHECK(eventually([&] { return !node.ztunnel_has(a) && !node.ztunnel_has(b); }, 10s));
  CHECK(eventually([&] { return !node.pod_has_our_rules(a); }, 5s));
  // Each cut watch resumed from its version: no relist was needed.
  CHECK(node.agent_log().find("relisting") == std::string::npos);
  int lists = 0;
  for (const auto& r : requests_since(node, "/api/v1/namespaces", since)) {
    if (r["method"] == "GET" && !r.value("watch", false) && r["path"] == "/api/v1/namespaces")
      ++lists;
  }
  CHECK(lists == 0);
}

TEST_CASE(
    "k8s fault: a watch answered 410 over and over is retried with back-off and recovers once "
    "it is not",
    "[e2e][k8s][fault]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh");
  Pod a = node.must_add_pod("a", "mesh");
  const int64_t since = last_request(node);
  node.api_json("POST", "/fake/fail?path=/api/v1/namespaces&watch=true&code=410&count=-1");
  node.api_json("POST", "/fake/close-watches");
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(4s);
  // The relists still see changes: the namespace is enrolled meanwhile.
  node.label_namespace("mesh", "istio.io/dataplane-mode", "ambient");
  std::this_thread::sleep_for(1s);
  auto during = requests_since(node, "/api/v1/namespaces", since);
  const double window_s = seconds_since(start);
  int watches = 0, lists = 0;
  for (const auto& r : during) {
    if (r["method"] != "GET") continue;
    if (r.value("watch", false))
      ++watches;
    else if (r["path"] == "/api/v1/namespaces")
      ++lists;
  }
  INFO(watches << " watches and " << lists << " lists of namespaces in " << window_s << " s");
  CHECK(watches >= 3);      // it does retry
  CHECK(watches <= 10);     // 200 ms doubling: not a request per round trip
  CHECK(lists <= watches);  // one relist per 410, no more
  CHECK(eventually([&] { return node.ztunnel_has(a); }, 15s));

  node.api_json("DELETE", "/fake/fail");
  const auto cleared = std::chrono::steady_clock::now();
  // Back to a live watch: a label change now lands without waiting for a relist.
  const bool watching = eventually(
      [&] {
        const json state = node.api_json("GET", "/fake/state");
        for (const auto& w : state["watches"]) {
          if (w.value("path", "").find("namespaces") != std::string::npos) return true;
        }
        return false;
      },
      15s);
  INFO(informer_lines(node));
  REQUIRE(watching);
  const double rewatch_s = seconds_since(cleared);
  node.label_namespace("mesh", "istio.io/dataplane-mode", std::nullopt);
  CHECK(eventually([&] { return !node.ztunnel_has(a); }, 3s));
  WARN(watches << " watches and " << lists << " lists of namespaces in " << window_s
               << " s of 410s; watching again " << rewatch_s << " s after they stopped");
}

TEST_CASE("k8s fault: an API server answering slowly delays ADDs within the plugin's budget",
          "[e2e][k8s][fault]") {
  SimNode node(kubernetes_node());
  node.create_namespace("mesh", kAmbientLabels);
  SECTION("watches held back 2 s: the pod reaches the cache late, the ADD waits for it") {
    node.api_json("POST", "/fake/fail?path=/api/v1/pods&watch=true&code=0&delay=2000&count=-1");
    node.api_json("POST", "/fake/close-watches");
    std::this_thread::sleep_for(200ms);
    const auto t = std::chrono::steady_clock::now();
    Pod a = node.must_add_pod("a", "mesh");
    const double took = seconds_since(t);
    CHECK(took < 5);  // the plugin's budget for the agent's answer
    CHECK(node.ztunnel_has(a));
    CHECK(node.pod_has_our_rules(a));
    CHECK(ready(node));
    WARN("ADD with the pod watch held 2 s: " << took << " s");
  }
  SECTION("lists held back 3 s at start: the agent is ready once they answer") {
    Pod a = node.must_add_pod("a", "mesh");
    node.stop_agent();
    node.api_json("POST",
                  "/fake/fail?path=/api/v1/&watch=false&method=GET&code=0&delay=3000&count=2");
    const auto t = std::chrono::steady_clock::now();
    node.start_agent();
    REQUIRE(eventually([&] { return ready(node); }, 15s));
    const double took = seconds_since(t);
    CHECK(took >= 3);
    CHECK(node.ztunnel_has(a));
    Pod b = node.must_add_pod("b", "mesh");
    CHECK(node.ztunnel_has(b));
    WARN("ready " << took << " s after a start with lists held 3 s");
  }
  SECTION("the annotation patch held back 4 s: the ADD fails naming it, in time, leaving nothing") {
    node.api_json("POST",
                  "/fake/fail?path=/api/v1/namespaces/mesh/pods/slow/status&method=PATCH&code=0&"
                  "delay=4000&count=-1");
    const auto t = std::chrono::steady_clock::now();
    Pod slow;
    auto added = node.add_pod("slow", "mesh", &slow);
    const double took = seconds_since(t);
    REQUIRE_FALSE(added.ok);
    CHECK(took < 5);
    CHECK_THAT(added.output.dump(), Catch::Contains("pod mesh/slow") &&
                                        Catch::Contains("ambient.istio.io/redirection=enabled") &&
                                        Catch::Contains("gave up after 3000 ms"));
    CHECK_FALSE(node.pod_has_our_rules(slow));
    CHECK(eventually([&] { return !node.ztunnel_has(slow); }));
    CHECK(ready(node));
    // Other pods are served meanwhile.
    node.api_json("DELETE", "/fake/fail");
    Pod c = node.must_add_pod("c", "mesh");
    CHECK(node.ztunnel_has(c));
    WARN("ADD with its annotation patch held 4 s failed after " << took << " s");
  }
}
