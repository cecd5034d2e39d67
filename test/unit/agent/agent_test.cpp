// Agent::add_pod against a real ZDS server with the test playing ztunnel and
// a scripted redirection backend: the Add goes out while the rules are
// being installed, and whichever half fails, the other half is undone.
#include <atomic>
#include <future>

#include "agent/agent.h"
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

// A ZDS server with one connected peer past its (empty) snapshot.
struct Ztunnel {
  TempDir dir;
  std::unique_ptr<zds::ZdsServer> server;
  UniqueFd peer;
  Ztunnel() {
    auto srv = zds::ZdsServer::start({.socket_path = dir.path + "/z.sock",
                                      .io_timeout = 2s,
                                      .snapshot = [] { return std::vector<zds::Workload>{}; }});
    REQUIRE(srv);
    server = std::move(*srv);
    peer = connect_peer(dir.path + "/z.sock");
    send_raw(peer.get(), hello());
    REQUIRE(next(peer.get()).has_snapshot_sent());
    send_raw(peer.get(), ack());
    for (int i = 0; i < 200 && !server->has_connection(); ++i) std::this_thread::sleep_for(5ms);
    REQUIRE(server->has_connection());
  }
};

const agent::PodIdentity kPod{.uid = "uid-web", .info = {"web", "demo", "sa"}};

}  // namespace

TEST_CASE("enrollment: ztunnel gets the Add while the rules are being installed", "[enroll]") {
  Ztunnel zt;
  agent::Config cfg;
  ScriptedBackend backend;
  std::promise<void> add_seen;
  backend.wait_for(add_seen.get_future().share());
  agent::Agent agent(cfg, backend);
  agent.set_zds(zt.server.get());
  auto added = std::async(std::launch::async, [&] { return agent.add_pod(kPod, own_netns()); });
  std::vector<UniqueFd> fds;
  auto m = next(zt.peer.get(), &fds);
  REQUIRE(m.has_add());
  CHECK(m.add().uid() == "uid-web");
  CHECK(fds.size() == 1);
  add_seen.set_value();  // only now may the install finish
  send_raw(zt.peer.get(), ack());
  auto r = added.get();
  INFO((r ? std::string() : r.error().describe()));
  REQUIRE(r);
  CHECK(backend.saw_event);  // the install was still running when ztunnel had the pod
  CHECK(agent.is_enrolled("uid-web"));
  CHECK(backend.removes == 0);
}

TEST_CASE("enrollment: rules that fail after ztunnel took the pod make ztunnel forget it",
          "[enroll]") {
  Ztunnel zt;
  agent::Config cfg;
  ScriptedBackend backend;
  backend.fail_with = "nft: Could not process rule: No such file or directory";
  agent::Agent agent(cfg, backend);
  agent.set_zds(zt.server.get());
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
  Ztunnel zt;
  agent::Config cfg;
  ScriptedBackend backend;
  agent::Agent agent(cfg, backend);
  agent.set_zds(zt.server.get());
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
  // Nothing was added on ztunnel's side, so no Del follows.
  CHECK_FALSE(zds::receive_message(zt.peer.get(), 200ms));
}
