// Agent::add_pod against a real ZDS server with the test playing ztunnel and
// a scripted redirection backend: the Add goes out while the rules are
// being installed, and whichever half fails, the other half is undone.
#include <atomic>
#include <future>

#include "agent/agent.h"
#include "support/require_ok.h"
#include "support/zds_peer.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace ambient::test;

namespace {

// Plays a backend whose install can wait for an event and then fail.
class ScriptedBackend : public redirect::RedirectBackend {
 public:
  std::string_view name() const override { return "scripted"; }
  Result<> install(const netns::Netns&, const redirect::PodRedirectConfig&,
                   const std::function<void()>& routed) override {
    if (routed) routed();
    if (wait_for_) saw_event = wait_for_->wait_for(2s) == std::future_status::ready;
    ++installs;
    if (!fail_with.empty()) return make_error(Errc::Internal, fail_with);
    return {};
  }
  Result<redirect::VerifyReport> verify(const netns::Netns&,
                                        const redirect::PodRedirectConfig&) const override {
    return redirect::VerifyReport{.complete = installs > removes};
  }
  Result<> remove(const netns::Netns&, const redirect::PodRedirectConfig&) override {
    ++removes;
    return {};
  }
  void wait_for(std::shared_future<void> f) { wait_for_ = std::move(f); }

  std::string fail_with;
  std::atomic<int> installs{0}, removes{0};
  std::atomic<bool> saw_event{false};

 private:
  std::optional<std::shared_future<void>> wait_for_;
};

// The node's probe set, as a list of (IP, pod UID) entries.
class RecordingHost : public redirect::HostRedirect {
 public:
  std::string_view name() const override { return "recording"; }
  Result<> install_rules(const redirect::HostProbeConfig&) override { return {}; }
  Result<> remove_rules() override { return {}; }
  Result<> ensure_sets(bool) override { return {}; }
  Result<> flush_sets() override { return {}; }
  Result<> destroy_sets() override { return {}; }
  Result<> add_pod_ip(const IpAddress& ip, const std::string& uid) override {
    entries.emplace_back(ip.to_string(), uid);
    return {};
  }
  Result<> remove_pod_ip(const IpAddress& ip, const std::string& uid) override {
    std::erase(entries, std::pair(ip.to_string(), uid));
    return {};
  }
  Result<std::vector<redirect::ProbeSetEntry>> list_sets() override {
    return std::vector<redirect::ProbeSetEntry>{};
  }
  std::vector<std::pair<std::string, std::string>> entries;
};

// A ZDS server with one connected peer past its (empty) snapshot.
struct Ztunnel {
  TempDir dir{"amb-zds-test-"};
  std::unique_ptr<zds::ZdsServer> server;
  UniqueFd peer;
  Ztunnel() {
    auto srv = zds::ZdsServer::start({.socket_path = dir.path() + "/z.sock",
                                      .io_timeout = 2s,
                                      .snapshot = [] { return std::vector<zds::Workload>{}; }});
    REQUIRE(srv);
    server = std::move(*srv);
    peer = connect_past_empty_snapshot(*server, dir.path() + "/z.sock");
  }
};

const agent::PodIdentity kPod{
    .uid = "uid-web", .info = {"web", "demo", "sa"}, .ips = {*IpAddress::parse("10.0.0.7")}};

// An agent wired to the scripted backend, the recording host and the ZDS
// server the test plays ztunnel on.
struct Node {
  Ztunnel zt;
  agent::Config cfg;
  ScriptedBackend backend;
  RecordingHost host;
  agent::PodCache pods;
  agent::StandalonePolicy policy{{"*"}, {}};
  agent::Agent agent{{.config = cfg,
                      .backend = backend,
                      .host = host,
                      .zds = *zt.server,
                      .pods = pods,
                      .policy = policy}};
};

}  // namespace

TEST_CASE("enrollment: ztunnel gets the Add while the rules are being installed", "[enroll]") {
  Node n;
  auto [zt, backend, agent] = std::tie(n.zt, n.backend, n.agent);
  std::promise<void> add_seen;
  backend.wait_for(add_seen.get_future().share());
  auto added = std::async(std::launch::async, [&] { return agent.add_pod(kPod, own_netns()); });
  std::vector<UniqueFd> fds;
  auto m = next(zt.peer.get(), &fds);
  REQUIRE(m.has_add());
  CHECK(m.add().uid() == "uid-web");
  CHECK(fds.size() == 1);
  add_seen.set_value();  // only now may the install finish
  send_raw(zt.peer.get(), ack());
  AMBIENT_REQUIRE_OK(added.get());
  CHECK(backend.saw_event);  // the install was still running when ztunnel had the pod
  CHECK(agent.is_enrolled("uid-web"));
  CHECK(backend.removes == 0);
  // Kubelet's probes to the pod's IP are let through: it is in the probe set.
  CHECK(n.host.entries == std::vector{std::pair<std::string, std::string>("10.0.0.7", "uid-web")});
}

TEST_CASE("enrollment: rules that fail after ztunnel took the pod make ztunnel forget it",
          "[enroll]") {
  Node n;
  auto [zt, backend, agent] = std::tie(n.zt, n.backend, n.agent);
  backend.fail_with = "nft: Could not process rule: No such file or directory";
  auto added = std::async(std::launch::async, [&] { return agent.add_pod(kPod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(zt.peer.get(), &fds).has_add());
  send_raw(zt.peer.get(), ack());
  auto del = next(zt.peer.get());
  REQUIRE(del.has_del());
  CHECK(del.del().uid() == "uid-web");
  send_raw(zt.peer.get(), ack());
  auto r = added.get();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(),
             Catch::Contains("pod demo/web") && Catch::Contains("Could not process rule"));
  CHECK_FALSE(agent.is_enrolled("uid-web"));
  CHECK(backend.removes == 0);  // a failed install leaves nothing to remove
}

TEST_CASE("enrollment: a refused Add takes the installed rules out again", "[enroll]") {
  Node n;
  auto [zt, backend, agent] = std::tie(n.zt, n.backend, n.agent);
  auto added = std::async(std::launch::async, [&] { return agent.add_pod(kPod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(zt.peer.get(), &fds).has_add());
  send_raw(zt.peer.get(), ack("failure to process message : no netns"));
  auto r = added.get();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(),
             Catch::Contains("hand netns to ztunnel") && Catch::Contains("no netns"));
  CHECK_FALSE(agent.is_enrolled("uid-web"));
  CHECK(backend.installs == 1);
  CHECK(backend.removes == 1);
  CHECK(n.host.entries.empty());  // the probe-set entry went with the rules
  // Nothing was added on ztunnel's side, so no Del follows.
  CHECK_FALSE(zds::receive_message(zt.peer.get(), 200ms));
}
