// The agent's /metrics text, driven through the components that update it
// (CNI server, enrollment pipeline, ZDS server, installer, standalone store)
// and the procfs reader, as a scrape sees it (docs/node-agent.md#metrics).
#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>
#include <sstream>
#include <thread>

#include "agent/agent.h"
#include "agent/standalone_store.h"
#include "cni_server/cni_handler.h"
#include "install/installer.h"
#include "lib/cni_event.h"
#include "metrics/agent_metrics.h"
#include "support/files.h"
#include "support/null_host.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "support/zds_peer.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The value of one series as rendered (`name{labels}`), if it is there.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

double value(const metrics::AgentMetrics& m, const std::string& series) {
  const std::string text = m.serialize();
  INFO(text);
  auto v = sample(text, series);
  REQUIRE(v);
  return *v;
}

// Enrollment never gets as far as the backend or the probe set here.
class NoBackend : public redirect::RedirectBackend {
 public:
  std::string_view name() const override { return "none"; }
  Result<> install(const netns::Netns&, const redirect::PodRedirectConfig&,
                   const std::function<void()>&) override {
    return make_error(Errc::Internal, "not in this test");
  }
  Result<redirect::VerifyReport> verify(const netns::Netns&,
                                        const redirect::PodRedirectConfig&) const override {
    return redirect::VerifyReport{};
  }
  Result<> remove(const netns::Netns&, const redirect::PodRedirectConfig&) override { return {}; }
};

http::Request cmdadd(const std::string& ns, const std::string& netns) {
  return {.method = "POST",
          .target = std::string(cni::kCmdAddPath),
          .body = cni::encode_event({.netns = netns, .pod_name = "web", .pod_namespace = ns})};
}

// The installer's view of a node: net.d, the plugin binary to copy, a
// service account.
struct InstallNode {
  TempDir dir{"amb-metrics-inst-"};
  std::string root = dir.path();
  InstallNode() {
    for (const char* d : {"/net.d", "/bin-src", "/bin", "/run", "/sa"}) {
      fs::create_directories(root + d);
    }
    write_file(root + "/sa/token", "tok");
    write_file(root + "/sa/ca.crt",
               "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    write_file(root + "/bin-src/istio-cni", "plugin");
  }
  install::InstallerConfig config() const {
    install::InstallerConfig c;
    c.cni_net_dir = root + "/net.d";
    c.bin_source_dir = root + "/bin-src";
    c.bin_target_dirs = {root + "/bin"};
    c.run_dir = root + "/run";
    c.sa_dir = root + "/sa";
    c.k8s_host = "10.96.0.1";
    c.k8s_port = "443";
    c.entry = install::plugin_entry(true, "/var/run/istio-cni", install::Json::array(), {},
                                    "istio-system", false, false, "info");
    return c;
  }
  void write_primary() const {
    write_file(root + "/net.d/10-bridge.conflist",
               R"({"cniVersion":"0.3.1","name":"k8s","plugins":[{"type":"bridge"}]})");
  }
};

}  // namespace

TEST_CASE("metrics: /cmdadd answers and enrollment phases, through the CNI server", "[metrics]") {
  metrics::AgentMetrics m;
  TempDir dir{"amb-metrics-"};
  auto zds = zds::ZdsServer::start({.socket_path = dir.path() + "/z.sock",
                                    .snapshot = [] { return std::vector<zds::Workload>{}; }});
  REQUIRE(zds);
  agent::Config cfg;
  NoBackend backend;
  NullHost host;
  agent::PodCache pods;
  agent::StandalonePolicy policy{{"mesh"}, {}};
  agent::Agent agent({.config = cfg,
                      .backend = backend,
                      .host = host,
                      .zds = **zds,
                      .pods = pods,
                      .policy = policy,
                      .metrics = m.enroll()});
  cni_server::CniHandler cni(agent, m.cni());

  CHECK(cni.handle({.method = "POST", .target = "/cmdadd", .body = "{"}).status == 400);
  CHECK(cni.handle(cmdadd("plain", "/var/run/netns/x")).status == 200);   // not selected
  CHECK(cni.handle(cmdadd("mesh", "/nonexistent/netns")).status == 500);  // netns will not open
  CHECK(cni.handle({.method = "POST", .target = "/cmddel", .body = "{"}).status == 400);

  // Only /cmdadd answers count, as upstream's.
  CHECK(value(m, R"(istio_cni_plugin_requests_total{response_code="200"})") == 1);
  CHECK(value(m, R"(istio_cni_plugin_requests_total{response_code="400"})") == 1);
  CHECK(value(m, R"(istio_cni_plugin_requests_total{response_code="500"})") == 1);
  CHECK(value(m, "ambient_cmdadd_duration_seconds_count") == 3);
  const std::string phase = "ambient_enroll_phase_duration_seconds_count";
  CHECK(value(m, phase + R"({phase="parse"})") == 3);
  CHECK(value(m, phase + R"({phase="decision"})") == 2);
  CHECK(value(m, phase + R"({phase="netns"})") == 1);
  CHECK(value(m, phase + R"({phase="rules"})") == 0);
}

TEST_CASE("metrics: histograms keep their bucket layout, 100 µs to 10 s", "[metrics]") {
  metrics::AgentMetrics m;
  auto cni = m.cni();
  cni.cmdadd->Observe(0.0003);
  cni.cmdadd->Observe(2);
  const std::string text = m.serialize();
  INFO(text);
  CHECK_THAT(text, Catch::Contains("# TYPE ambient_cmdadd_duration_seconds histogram\n"));
  const std::string b = "ambient_cmdadd_duration_seconds_bucket";
  for (const char* le : {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                         "0.05", "0.1", "0.25", "0.5", "1", "10", "+Inf"}) {
    INFO(le);
    CHECK(sample(text, b + "{le=\"" + le + "\"}"));
  }
  CHECK(sample(text, b + R"({le="0.00025"})") == 0);
  CHECK(sample(text, b + R"({le="0.0005"})") == 1);
  CHECK(sample(text, b + R"({le="10"})") == 2);
  CHECK(sample(text, b + R"({le="+Inf"})") == 2);
  CHECK(sample(text, "ambient_cmdadd_duration_seconds_sum") == Approx(2.0003));
}

TEST_CASE("metrics: ZDS round trips, and ztunnel_connected read at the scrape", "[metrics]") {
  metrics::AgentMetrics m;
  TempDir dir{"amb-metrics-"};
  auto srv = zds::ZdsServer::start({.socket_path = dir.path() + "/z.sock",
                                    .snapshot = [] { return std::vector<zds::Workload>{}; },
                                    .metrics = m.zds()});
  REQUIRE(srv);
  zds::ZdsServer& server = **srv;
  m.set_scrape_sources({.ztunnel_connected = [&] { return double(server.connected()); },
                        .enrolled_pods = [] { return 7.0; }});
  CHECK(value(m, "ztunnel_connected") == 0);
  UniqueFd peer = connect_past_empty_snapshot(server, dir.path() + "/z.sock");
  CHECK(value(m, "ztunnel_connected") == 1);
  CHECK(value(m, "ambient_enrolled_pods") == 7);
  CHECK(eventually([&] {
    return value(m, R"(ambient_zds_round_trip_duration_seconds_count{op="snapshot_sent"})") == 1;
  }));
  CHECK(value(m, R"(ambient_zds_round_trip_duration_seconds_count{op="add"})") == 0);
}

TEST_CASE("metrics: installer passes by the step that failed", "[metrics][installer]") {
  metrics::AgentMetrics m;
  InstallNode node;
  auto cfg = node.config();
  const auto failed = [&](const char* result) {
    return value(m, std::string(R"(istio_cni_installs_total{result=")") + result + "\"}");
  };
  SECTION("no plugin binary to copy") {
    cfg.bin_source_dir = node.root + "/missing";
    CHECK_FALSE(install::Installer(cfg, m.installer()).install_once());
    CHECK(failed("COPY_BINARIES_FAILURE") == 1);
  }
  SECTION("no API server address for the kubeconfig") {
    cfg.k8s_host.clear();
    CHECK_FALSE(install::Installer(cfg, m.installer()).install_once());
    CHECK(failed("CREATE_KUBECONFIG_FAILURE") == 1);
  }
  SECTION("no primary CNI config to insert into") {
    CHECK_FALSE(install::Installer(cfg, m.installer()).install_once());
    CHECK(failed("CREATE_CNI_CONFIG_FAILURE") == 1);
  }
  CHECK(failed("SUCCESS") == 0);
  CHECK(value(m, "istio_cni_install_ready") == 0);
}

TEST_CASE("metrics: an install counts once per change it makes; readiness follows",
          "[metrics][installer]") {
  metrics::AgentMetrics m;
  InstallNode node;
  node.write_primary();
  install::Installer inst(node.config(), m.installer());
  std::atomic<bool> stop{false};
  std::thread loop([&] { (void)inst.run(stop); });
  const std::string success = R"(istio_cni_installs_total{result="SUCCESS"})";
  CHECK(eventually([&] { return value(m, "istio_cni_install_ready") == 1; }, 3s));
  // The echo of our own writes and the periodic re-checks are no installs.
  std::this_thread::sleep_for(600ms);
  CHECK(value(m, success) == 1);
  // Another CNI rewrites the primary without our entry: repaired, counted.
  node.write_primary();
  CHECK(eventually([&] { return value(m, success) == 2; }, 3s));
  stop = true;
  loop.join();
  CHECK(inst.cleanup());
  CHECK(value(m, "istio_cni_install_ready") == 0);
}

TEST_CASE("metrics: a failed save of the standalone store is counted", "[metrics]") {
  metrics::AgentMetrics m;
  TempDir dir{"amb-metrics-"};
  write_file(dir.path() + "/boot_id", "boot-a\n");
  agent::StandaloneStore store(dir.path() + "/missing/store.json", dir.path() + "/boot_id",
                               m.store_write_failures());
  agent::StoredPod p;
  p.pod.uid = "u1";
  p.pod.info = {.name = "web", .ns = "demo", .service_account = "default"};
  store.put(p);
  CHECK(value(m, "ambient_standalone_store_write_failures_total") == 1);
}

TEST_CASE("metrics: a family shows only once its component asked for it", "[metrics]") {
  metrics::AgentMetrics m;
  CHECK_THAT(m.serialize(), !Catch::Contains("istio_cni_install") &&
                                !Catch::Contains("nodeagent_reconcile_events_total") &&
                                !Catch::Contains("ztunnel_connected"));
  auto r = m.reconcile();
  metrics::inc(r.add);
  metrics::inc(r.update);
  metrics::inc(r.update);
  CHECK(m.reconcile().update == r.update);  // asking again gives the same objects
  CHECK(value(m, R"(nodeagent_reconcile_events_total{type="add"})") == 1);
  CHECK(value(m, R"(nodeagent_reconcile_events_total{type="update"})") == 2);
  CHECK(value(m, R"(nodeagent_reconcile_events_total{type="delete"})") == 0);
}

TEST_CASE("metrics: process metrics from /proc/self/stat", "[metrics][process]") {
  // A command name with spaces and parentheses; fields 14/15 utime/stime,
  // 22 starttime, 23 vsize, 24 rss.
  const std::string line =
      "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 12345 "
      "104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
  auto s = metrics::parse_proc_stat(line, 100, 4096);
  REQUIRE(s);
  CHECK(s->cpu_seconds == Approx(3.0));
  CHECK(s->start_after_boot_s == Approx(123.45));
  CHECK(s->virtual_bytes == 104857600);
  CHECK(s->resident_bytes == 2560.0 * 4096);
  CHECK_FALSE(metrics::parse_proc_stat("4242 (short) S 1 2 3", 100, 4096));
  CHECK_FALSE(metrics::parse_proc_stat("no command name", 100, 4096));

  auto boot = metrics::parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n");
  REQUIRE(boot);
  CHECK(*boot == 1700000000);
  CHECK_FALSE(metrics::parse_boot_time("cpu 1 2 3\n"));
}

TEST_CASE("metrics: process metrics read at each scrape", "[metrics][process]") {
  metrics::AgentMetrics m;
  const std::string text = m.serialize();
  INFO(text);
  for (const char* name : {"process_resident_memory_bytes", "process_virtual_memory_bytes",
                           "process_open_fds", "process_max_fds"}) {
    INFO(name);
    CHECK(sample(text, name).value_or(0) > 0);
  }
  CHECK_THAT(text, Catch::Contains("# TYPE process_cpu_seconds_total counter\n"));
  const double start = sample(text, "process_start_time_seconds").value_or(0);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK(start <= now + 1);
  CHECK(start > now - 24 * 3600.0);

  // What cannot be read is left out, not reported as 0.
  auto partial = metrics::ProcessCollector("/nonexistent").Collect();
  REQUIRE(partial.size() == 1);
  CHECK(partial[0].name == "process_max_fds");
}
