// The agent's shared state under the concurrency a node produces: many
// ADDs at once (the CNI pool), the self-verify's pass, the admin API's
// reads and the event stream, then many DELs at once, against a real ZDS
// server with the test acking as ztunnel. The assertions are about the end
// state; the races are what the ThreadSanitizer run
// (scripts/test-sanitized --thread) finds in this test. The admin data
// source is called from plain threads here because gRPC's own threads
// cannot be checked by TSan (test/tsan.supp).
#include <atomic>
#include <future>
#include <thread>

#include "admin/agent_source.h"
#include "admin/events.h"
#include "admin/journal.h"
#include "admin/self_check.h"
#include "agent/agent.h"
#include "support/fake_redirect.h"
#include "support/require_ok.h"
#include "support/temp_dir.h"
#include "support/zds_peer.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace ambient::test;

namespace {

// Plays ztunnel: acks every message until stopped.
class AckingPeer {
 public:
  explicit AckingPeer(int fd)
      : thread_([this, fd] {
          while (!stop_) {
            auto m = zds::receive_message(fd, 50ms);
            if (!m || m->bytes.empty()) continue;
            // Not send_raw: Catch2's assertions belong to the test's thread.
            if (zds::send_message(fd, ack(), {}, 1s)) ++acked;
          }
        }) {}
  ~AckingPeer() {
    stop_ = true;
    thread_.join();
  }
  std::atomic<int> acked{0};

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

constexpr int kPods = 16;

agent::PodIdentity pod_number(int i) {
  const std::string n = std::to_string(i);
  return {.uid = "uid-" + n,
          .info = {"pod-" + n, "demo", "sa"},
          .ips = {*IpAddress::parse("10.0.1." + std::to_string(i + 1))}};
}

}  // namespace

TEST_CASE("many pods enrolled and removed at once, while the self-verify and the admin API read",
          "[enroll][concurrency]") {
  TempDir dir{"amb-concurrency-"};
  auto srv = zds::ZdsServer::start({.socket_path = dir.path() + "/z.sock",
                                    .io_timeout = 5s,
                                    .snapshot = [] { return std::vector<zds::Workload>{}; }});
  REQUIRE(srv);
  std::unique_ptr<zds::ZdsServer> zds = std::move(*srv);
  UniqueFd peer = connect_past_empty_snapshot(*zds, dir.path() + "/z.sock");
  AckingPeer ztunnel(peer.get());

  agent::Config cfg;
  CountingBackend backend;
  RecordingHost host;
  agent::PodCache pods;
  agent::StandalonePolicy policy{{"*"}, {}};
  admin::EventHub events;
  admin::Journal journal{events};
  agent::Agent agent{{.config = cfg,
                      .backend = backend,
                      .host = host,
                      .zds = *zds,
                      .pods = pods,
                      .policy = policy,
                      .observer = &journal}};
  admin::SelfCheck self_check(
      {.pods = pods,
       .zds = *zds,
       .journal = journal,
       .events = events,
       .repair = [&](const std::string& uid) { return agent.repair_pod(uid); },
       .interval = std::chrono::seconds(0)});
  admin::AgentSource source({.config = cfg,
                             .pods = pods,
                             .backend = backend,
                             .zds = *zds,
                             .journal = journal,
                             .events = events,
                             .backend_kind = "counting",
                             .ready = [] { return true; },
                             .zds_accepting = [] { return true; },
                             .drift_repairs = [&] { return self_check.repairs(); }});

  // Readers that run through both phases.
  std::atomic<bool> done{false};
  auto subscription = events.subscribe();
  std::atomic<int> seen_events{0};
  std::thread watcher([&] {
    while (!done) {
      if (subscription->next(20ms)) ++seen_events;
    }
  });
  std::atomic<bool> verifier_done{false};
  std::thread verifier([&] {
    while (!verifier_done) self_check.verify_all();
  });
  std::thread admin_reader([&] {
    while (!done) {
      (void)source.status();
      (void)source.pods();
      (void)journal.failed();
      (void)pods.workloads();
      (void)self_check.metrics_text();  // what /metrics serves
    }
  });

  // Opened here: Catch2's assertions belong to the test's thread.
  const netns::NetnsRef ns = own_netns();
  std::vector<std::future<Result<>>> adds;
  adds.reserve(kPods);
  for (int i = 0; i < kPods; ++i) {
    adds.push_back(
        std::async(std::launch::async, [&, i] { return agent.add_pod(pod_number(i), ns); }));
  }
  for (auto& a : adds) AMBIENT_REQUIRE_OK(a.get());
  CHECK(pods.size() == kPods);
  CHECK(source.pods().size() == kPods);

  std::vector<std::future<Result<>>> dels;
  dels.reserve(kPods);
  for (int i = 0; i < kPods; ++i) {
    dels.push_back(std::async(std::launch::async, [&, i] {
      return agent.remove_pod(pod_number(i).uid, /*netns_going_away=*/false);
    }));
  }
  for (auto& d : dels) AMBIENT_REQUIRE_OK(d.get());

  // As at the agent's shutdown: the self-verify's thread ends while /metrics
  // and the admin API still read its counter.
  verifier_done = true;
  verifier.join();
  self_check.stop();
  std::this_thread::sleep_for(50ms);
  done = true;
  watcher.join();
  admin_reader.join();
  events.unsubscribe(subscription);

  CHECK(pods.size() == 0);
  CHECK(host.entries.empty());
  CHECK(backend.installs == kPods);
  CHECK(backend.removes == kPods);
  CHECK(ztunnel.acked == 2 * kPods);  // an Add and a Del each
  CHECK(seen_events > 0);
}
