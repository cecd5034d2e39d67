// Agent::add_pod against a real ZDS server with the test playing ztunnel and
// a scripted redirection backend: the Add goes out while the rules are
// being installed, and whichever half fails, the other half is undone.
#include <atomic>
#include <future>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "agent/agent.h"
#include "support/fake_redirect.h"
#include "support/files.h"
#include "support/require_ok.h"
#include "support/temp_dir.h"
#include "support/zds_peer.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace ambient::test;
namespace fs = std::filesystem;

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
  Result<bool> ztunnel_ready(const netns::Netns&, const redirect::PodRedirectConfig&) override {
    ++ready_calls;
    if (!ready_fails_with.empty()) return make_error(Errc::Internal, ready_fails_with);
    return ready_suits.load();
  }
  void wait_for(std::shared_future<void> f) { wait_for_ = std::move(f); }

  std::string fail_with;
  std::string ready_fails_with;
  std::atomic<bool> ready_suits{true};
  std::atomic<int> ready_calls{0};
  std::atomic<int> installs{0}, removes{0};
  std::atomic<bool> saw_event{false};

 private:
  std::optional<std::shared_future<void>> wait_for_;
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
  auto added = std::async(std::launch::async, [&n] { return n.agent.add_pod(kPod, own_netns()); });
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

// Enrolls `pod` with the test playing ztunnel: the Add is acked.
Result<> enroll_acked(Node& n, const agent::PodIdentity& pod) {
  auto added = std::async(std::launch::async, [&] { return n.agent.add_pod(pod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack());
  return added.get();
}

// RedirectBackend::ztunnel_ready: ztunnel's listeners are checked after its
// ack, and only once per ztunnel connection while they suit the backend.
TEST_CASE("enrollment: ztunnel's listeners are checked once per connection while they suit",
          "[enroll]") {
  Node n;
  agent::PodIdentity second = kPod;
  second.uid = "uid-api";
  second.info.name = "api";
  second.ips = {*IpAddress::parse("10.0.0.8")};
  SECTION("they suit: checked for the first pod only") {
    AMBIENT_REQUIRE_OK(enroll_acked(n, kPod));
    AMBIENT_REQUIRE_OK(enroll_acked(n, second));
    CHECK(n.backend.ready_calls == 1);
  }
  SECTION("they do not (the backend moved the pod): checked for every pod") {
    n.backend.ready_suits = false;
    AMBIENT_REQUIRE_OK(enroll_acked(n, kPod));
    AMBIENT_REQUIRE_OK(enroll_acked(n, second));
    CHECK(n.backend.ready_calls == 2);
    CHECK(n.agent.is_enrolled("uid-api"));
  }
  SECTION("the check fails: the enrollment is rolled back") {
    n.backend.ready_fails_with = "move to the rules: iptables-restore failed";
    auto added =
        std::async(std::launch::async, [&n] { return n.agent.add_pod(kPod, own_netns()); });
    std::vector<UniqueFd> fds;
    REQUIRE(next(n.zt.peer.get(), &fds).has_add());
    send_raw(n.zt.peer.get(), ack());
    REQUIRE(next(n.zt.peer.get()).has_del());  // ztunnel forgets it
    send_raw(n.zt.peer.get(), ack());
    auto r = added.get();
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().describe(), Catch::Contains("iptables-restore failed"));
    CHECK_FALSE(n.agent.is_enrolled("uid-web"));
    CHECK(n.backend.removes == 1);
    CHECK(n.host.entries.empty());
  }
}

TEST_CASE("enrollment: rules that fail after ztunnel took the pod make ztunnel forget it",
          "[enroll]") {
  Node n;
  auto [zt, backend, agent] = std::tie(n.zt, n.backend, n.agent);
  backend.fail_with = "nft: Could not process rule: No such file or directory";
  auto added = std::async(std::launch::async, [&n] { return n.agent.add_pod(kPod, own_netns()); });
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
  auto added = std::async(std::launch::async, [&n] { return n.agent.add_pod(kPod, own_netns()); });
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

namespace {

cni::CniEvent event_for(const std::string& netns, const std::string& container_id) {
  return {.netns = netns,
          .pod_name = "web",
          .pod_namespace = "demo",
          .pod_uid = "uid-web",
          .container_id = container_id};
}

// A stand-in for another sandbox's netns (the backend is scripted, so any
// file with its own inode will do).
netns::NetnsRef other_netns(const TempDir& dir, const std::string& name) {
  const std::string path = dir.path() + "/" + name;
  write_file(path, "");
  auto ns =
      netns::Netns::from_fd_for_test(UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), path);
  REQUIRE(ns);
  return std::make_shared<const netns::Netns>(std::move(*ns));
}

// This process's netns as a runtime of the node would name it.
std::string own_proc_netns() { return "/proc/" + std::to_string(::getpid()) + "/ns/net"; }

// Enrolls kPod as sandbox `container_id` in `ns`, playing ztunnel's ack.
void enroll(Node& n, const netns::NetnsRef& ns, const std::string& container_id,
            std::vector<IpAddress> ips = {*IpAddress::parse("10.0.0.7")}) {
  agent::PodIdentity pod = kPod;
  pod.container_id = container_id;
  pod.ips = std::move(ips);
  auto added = std::async(std::launch::async, [&] { return n.agent.add_pod(pod, ns); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack());
  AMBIENT_REQUIRE_OK(added.get());
}

}  // namespace

// docs/node-agent.md#cni-endpoint: the node's netns is never a pod's.
TEST_CASE("a /cmdadd naming the node's network namespace is refused and installs nothing",
          "[enroll][netns]") {
  Node n;
  n.cfg.host_netns = "/proc/thread-self/ns/net";  // this process plays the node
  agent::Agent agent({.config = n.cfg,
                      .backend = n.backend,
                      .host = n.host,
                      .zds = *n.zt.server,
                      .pods = n.pods,
                      .policy = n.policy});
  auto r = agent.cmd_add(event_for(own_proc_netns(), "c1"));
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("pod demo/web") &&
                                       Catch::Contains("network namespace of the node") &&
                                       Catch::Contains("nothing installed"));
  CHECK(n.backend.installs == 0);
  CHECK_FALSE(agent.is_enrolled("uid-web"));
  CHECK_FALSE(zds::receive_message(n.zt.peer.get(), 200ms));  // ztunnel was told nothing
}

TEST_CASE("a /cmdadd naming the agent's own network namespace is refused", "[enroll][netns]") {
  Node n;
  n.cfg.host_netns = "/nonexistent/ns/net";  // only the agent's own is known
  agent::Agent agent({.config = n.cfg,
                      .backend = n.backend,
                      .host = n.host,
                      .zds = *n.zt.server,
                      .pods = n.pods,
                      .policy = n.policy});
  auto r = agent.cmd_add(event_for(own_proc_netns(), "c1"));
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("the agent itself"));
  CHECK(n.backend.installs == 0);
}

// docs/node-agent.md#netns-paths: a request names a runtime's netns file or
// a process's netns, nothing else.
TEST_CASE("a /cmdadd naming a path no container runtime gives is refused before opening it",
          "[enroll][netns][security]") {
  Node n;
  const std::string path =
      GENERATE(as<std::string>{}, "/etc/passwd", "/proc/self/ns/net", "/proc/thread-self/ns/net",
               "/var/run/netns/../../../etc/shadow", "/proc/1/../self/ns/net", "/proc/01/ns/net",
               "/proc/1/ns/mnt", "/proc/1/ns/net/..", "/var/run/netns/", "/var/run/netns/a/b",
               "/var/run/netns/..", "var/run/netns/x", "/run/netns//x");
  auto r = n.agent.cmd_add(event_for(path, "c1"));
  REQUIRE_FALSE(r);
  INFO(r.error().describe());
  CHECK_THAT(r.error().describe(), Catch::Contains("pod demo/web: open netns: netns " + path) &&
                                       Catch::Contains("/var/run/netns/<name>") &&
                                       Catch::Contains("refused"));
  CHECK_FALSE(r.error().retryable);
  CHECK(n.backend.installs == 0);
  CHECK_FALSE(zds::receive_message(n.zt.peer.get(), 50ms));
}

TEST_CASE("a /cmdadd naming a symlink or a plain file in the netns directory is refused",
          "[enroll][netns][security]") {
  Node n;
  TempDir host("amb-agent-hostroot-");
  n.cfg.host_root = host.path();
  fs::create_directories(host.path() + "/var/run/netns");
  fs::create_directories(host.path() + "/run/netns");
  // Both would lead to a real netns (this process's) if followed.
  fs::create_symlink("/proc/self/ns/net", host.path() + "/var/run/netns/cni-link");
  fs::create_symlink("/proc/self/ns/net", host.path() + "/run/netns/cni-link");
  write_file(host.path() + "/var/run/netns/cni-plain", "");
  for (const char* p : {"/var/run/netns/cni-link", "/run/netns/cni-link"}) {
    auto r = n.agent.cmd_add(event_for(p, "c1"));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().describe(), Catch::Contains(host.path() + p) &&
                                         Catch::Contains("is a symbolic link") &&
                                         Catch::Contains("refused"));
  }
  auto plain = n.agent.cmd_add(event_for("/var/run/netns/cni-plain", "c1"));
  REQUIRE_FALSE(plain);
  CHECK_THAT(plain.error().describe(), Catch::Contains("not a network namespace"));
  CHECK_FALSE(plain.error().retryable);
  CHECK(n.backend.installs == 0);
}

TEST_CASE(
    "a /cmdadd naming /proc/<pid>/ns/net under a host root whose /proc is not procfs is "
    "refused",
    "[enroll][netns][security]") {
  Node n;
  TempDir host("amb-agent-hostroot-");
  n.cfg.host_root = host.path();
  fs::create_directories(host.path() + "/proc/4242/ns");
  fs::create_symlink("/proc/self/ns/net", host.path() + "/proc/4242/ns/net");
  auto r = n.agent.cmd_add(event_for("/proc/4242/ns/net", "c1"));
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("is not on procfs"));
  CHECK(n.backend.installs == 0);
}

// docs/node-agent.md#removal: a DEL acts on the sandbox it names.
TEST_CASE("a DEL for an earlier sandbox of an enrolled pod leaves the enrolled one alone",
          "[enroll][del]") {
  Node n;
  enroll(n, own_netns(), "sandbox-2");
  // The runtime stops the pod's previous sandbox (same pod UID).
  AMBIENT_REQUIRE_OK(n.agent.cmd_del(event_for("", "sandbox-1")));
  CHECK(n.agent.is_enrolled("uid-web"));
  CHECK(n.backend.removes == 0);
  CHECK(n.host.entries.size() == 1);
  CHECK_FALSE(zds::receive_message(n.zt.peer.get(), 200ms));  // no Del for the pod
  // The DEL for the enrolled sandbox itself removes it.
  auto del =
      std::async(std::launch::async, [&] { return n.agent.cmd_del(event_for("", "sandbox-2")); });
  auto m = next(n.zt.peer.get());
  REQUIRE(m.has_del());
  CHECK(m.del().uid() == "uid-web");
  send_raw(n.zt.peer.get(), ack());
  AMBIENT_REQUIRE_OK(del.get());
  CHECK_FALSE(n.agent.is_enrolled("uid-web"));
  CHECK(n.backend.removes == 1);
  CHECK(n.host.entries.empty());
}

TEST_CASE("a DEL without container IDs is told apart by the netns it names", "[enroll][del]") {
  Node n;
  TempDir dir("amb-agent-del-");
  enroll(n, own_netns(), "");
  auto stale = other_netns(dir, "old-sandbox");
  AMBIENT_REQUIRE_OK(n.agent.cmd_del(event_for(stale->path(), "")));
  CHECK(n.agent.is_enrolled("uid-web"));
  CHECK(n.backend.removes == 0);  // the live netns is untouched (the stale one is no netns)
  CHECK_FALSE(zds::receive_message(n.zt.peer.get(), 200ms));
}

TEST_CASE("a second ADD for an enrolled pod with a new sandbox replaces the old enrollment",
          "[enroll][del]") {
  Node n;
  TempDir dir("amb-agent-readd-");
  enroll(n, other_netns(dir, "sandbox-1"), "sandbox-1");
  enroll(n, own_netns(), "sandbox-2", {*IpAddress::parse("10.0.0.8")});
  CHECK(n.agent.is_enrolled("uid-web"));
  CHECK(n.backend.installs == 2);
  CHECK(n.backend.removes == 1);  // the old sandbox's netns lost our rules
  // The probe set follows the IPs: the old one went, the new one is there.
  CHECK(n.host.entries == std::vector{std::pair<std::string, std::string>("10.0.0.8", "uid-web")});
  CHECK(n.pods.get("uid-web")->container_id == "sandbox-2");
  // The old sandbox's DEL, arriving late, changes nothing.
  AMBIENT_REQUIRE_OK(n.agent.cmd_del(event_for("", "sandbox-1")));
  CHECK(n.agent.is_enrolled("uid-web"));
  CHECK_FALSE(zds::receive_message(n.zt.peer.get(), 200ms));
}

namespace {

// Plays the Kubernetes controller's annotation write: the test decides when
// it ends and how.
class ScriptedListener : public agent::EnrollmentListener {
 public:
  std::future<Result<>> mark_enrolled(const agent::PodIdentity& pod) override {
    uid = pod.uid;  // read by the test only after add_pod returned
    ++marks;
    return outcome.get_future();
  }
  void unmark_failed(const agent::PodIdentity&) override { ++unmarks; }
  void sandbox_removed(const std::string&, const std::string&) override { ++sandboxes_removed; }

  std::promise<Result<>> outcome;
  std::string uid;
  std::atomic<int> marks{0}, unmarks{0}, sandboxes_removed{0};
};

// Node's agent, with the listener Kubernetes mode has.
struct NodeWithListener : Node {
  ScriptedListener listener;
  agent::Agent k8s_agent{{.config = cfg,
                          .backend = backend,
                          .host = host,
                          .zds = *zt.server,
                          .pods = pods,
                          .policy = policy,
                          .listener = &listener}};
};

}  // namespace

// docs/node-agent.md#annotations: the annotation is in place before the answer.
TEST_CASE("enrollment: an annotation that lands after the rules and ztunnel holds the answer back",
          "[enroll][annotation]") {
  NodeWithListener n;
  auto added =
      std::async(std::launch::async, [&n] { return n.k8s_agent.add_pod(kPod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack());
  // Rules, probe set and ztunnel are done; the annotation is not. (CHECK,
  // not REQUIRE: add_pod must still be let go below.)
  CHECK(added.wait_for(300ms) == std::future_status::timeout);
  CHECK(n.listener.marks == 1);
  CHECK(n.backend.installs == 1);
  CHECK_FALSE(n.k8s_agent.is_enrolled("uid-web"));
  n.listener.outcome.set_value({});
  AMBIENT_REQUIRE_OK(added.get());
  CHECK(n.listener.uid == "uid-web");
  CHECK(n.k8s_agent.is_enrolled("uid-web"));
  CHECK(n.backend.removes == 0);
  CHECK(n.listener.unmarks == 0);
  CHECK(n.host.entries == std::vector{std::pair<std::string, std::string>("10.0.0.7", "uid-web")});
}

TEST_CASE("enrollment: an annotation that cannot be written fails the ADD and undoes the rest",
          "[enroll][annotation]") {
  NodeWithListener n;
  n.listener.outcome.set_value(make_error(
      Errc::Unavailable,
      "set ambient.istio.io/redirection=enabled (gave up after 3000 ms): HTTP 500: etcd down"));
  auto added =
      std::async(std::launch::async, [&n] { return n.k8s_agent.add_pod(kPod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack());
  auto del = next(n.zt.peer.get());  // ztunnel acked, so it is told to forget the pod
  REQUIRE(del.has_del());
  CHECK(del.del().uid() == "uid-web");
  send_raw(n.zt.peer.get(), ack());
  auto r = added.get();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("pod demo/web") &&
                                       Catch::Contains("ambient.istio.io/redirection") &&
                                       Catch::Contains("etcd down"));
  CHECK_FALSE(n.k8s_agent.is_enrolled("uid-web"));
  CHECK(n.backend.installs == 1);
  CHECK(n.backend.removes == 1);
  CHECK(n.host.entries.empty());
  CHECK(n.listener.unmarks == 0);  // nothing was written, nothing to put back
}

TEST_CASE("enrollment: a failure after the annotation was written puts the annotation back",
          "[enroll][annotation]") {
  NodeWithListener n;
  n.listener.outcome.set_value({});
  auto added =
      std::async(std::launch::async, [&n] { return n.k8s_agent.add_pod(kPod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack("failure to process message : no netns"));
  auto r = added.get();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("hand netns to ztunnel"));
  CHECK(n.listener.unmarks == 1);
  CHECK(n.backend.removes == 1);
  CHECK_FALSE(n.k8s_agent.is_enrolled("uid-web"));
}

// docs/node-agent.md#decision-table: the probe set follows an enrolled pod's IPs.
TEST_CASE("an enrolled pod's new IPs replace its probe-set entries", "[enroll][probe]") {
  Node n;
  using Entries = std::vector<std::pair<std::string, std::string>>;
  SECTION("IPs that change after enrollment") {
    enroll(n, own_netns(), "sandbox-1");
    AMBIENT_REQUIRE_OK(n.agent.update_pod_ips(
        "uid-web", {*IpAddress::parse("10.0.0.7"), *IpAddress::parse("10.0.0.9")}));
    CHECK(n.host.entries == Entries{{"10.0.0.7", "uid-web"}, {"10.0.0.9", "uid-web"}});
    AMBIENT_REQUIRE_OK(n.agent.update_pod_ips("uid-web", {*IpAddress::parse("10.0.0.9")}));
    CHECK(n.host.entries == Entries{{"10.0.0.9", "uid-web"}});
    CHECK(n.pods.get("uid-web")->ips == std::vector{*IpAddress::parse("10.0.0.9")});
    CHECK(n.pods.get("uid-web")->container_id == "sandbox-1");  // the rest of the entry stays
  }
  SECTION("a pod adopted at startup before its status had IPs") {
    agent::PodIdentity pod = kPod;
    pod.ips.clear();
    AMBIENT_REQUIRE_OK(n.agent.adopt_pod(pod, own_netns(), false));
    CHECK(n.host.entries.empty());
    AMBIENT_REQUIRE_OK(n.agent.update_pod_ips("uid-web", {*IpAddress::parse("10.0.0.7")}));
    CHECK(n.host.entries == Entries{{"10.0.0.7", "uid-web"}});
  }
  // A pod that is not enrolled is left alone.
  AMBIENT_REQUIRE_OK(n.agent.update_pod_ips("uid-other", {*IpAddress::parse("10.0.0.8")}));
  CHECK(std::none_of(n.host.entries.begin(), n.host.entries.end(),
                     [](const auto& e) { return e.second == "uid-other"; }));
  CHECK_FALSE(zds::receive_message(n.zt.peer.get(), 200ms));  // ztunnel is not involved
}

// docs/node-agent.md#removal: a DEL for the enrolled sandbox drops the mark
// (the pod may live on without it); one for another sandbox does not.
TEST_CASE("a DEL for the enrolled sandbox tells the listener; one for another sandbox does not",
          "[enroll][del][annotation]") {
  NodeWithListener n;
  n.listener.outcome.set_value({});
  agent::PodIdentity pod = kPod;
  pod.container_id = "sandbox-2";
  auto added =
      std::async(std::launch::async, [&] { return n.k8s_agent.add_pod(pod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack());
  AMBIENT_REQUIRE_OK(added.get());

  AMBIENT_REQUIRE_OK(n.k8s_agent.cmd_del(event_for("", "sandbox-1")));
  CHECK(n.listener.sandboxes_removed == 0);
  auto del = std::async(std::launch::async,
                        [&] { return n.k8s_agent.cmd_del(event_for("", "sandbox-2")); });
  REQUIRE(next(n.zt.peer.get()).has_del());
  send_raw(n.zt.peer.get(), ack());
  AMBIENT_REQUIRE_OK(del.get());
  CHECK(n.listener.sandboxes_removed == 1);
}

// docs/node-agent.md#removal: a replacing sandbox that fails after ztunnel
// took it must not cost the pod its enrolled sandbox.
TEST_CASE(
    "a replacing sandbox that fails after ztunnel took it gives ztunnel the enrolled one back",
    "[enroll][del]") {
  NodeWithListener n;
  TempDir dir("amb-agent-readd-fail-");
  const auto old_ns = other_netns(dir, "sandbox-1");
  n.listener.outcome.set_value({});
  agent::PodIdentity first = kPod;
  first.container_id = "sandbox-1";
  first.ips = {*IpAddress::parse("10.0.0.7")};
  auto a1 = std::async(std::launch::async, [&] { return n.k8s_agent.add_pod(first, old_ns); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack());
  AMBIENT_REQUIRE_OK(a1.get());

  n.listener.outcome = std::promise<Result<>>();
  n.listener.outcome.set_value(make_error(Errc::Unavailable, "HTTP 500: etcd down"));
  agent::PodIdentity second = first;
  second.container_id = "sandbox-2";
  second.ips = {*IpAddress::parse("10.0.0.8")};
  auto a2 =
      std::async(std::launch::async, [&] { return n.k8s_agent.add_pod(second, own_netns()); });
  REQUIRE(next(n.zt.peer.get(), &fds).has_add());
  send_raw(n.zt.peer.get(), ack());
  std::vector<UniqueFd> back_fds;
  auto back = next(n.zt.peer.get(), &back_fds);
  CHECK_FALSE(back.has_del());
  REQUIRE(back.has_add());
  CHECK(back.add().uid() == "uid-web");
  REQUIRE(back_fds.size() == 1);
  struct stat st {};
  REQUIRE(::fstat(back_fds[0].get(), &st) == 0);
  CHECK(st.st_ino == old_ns->inode());  // the enrolled sandbox's netns
  send_raw(n.zt.peer.get(), ack());
  REQUIRE_FALSE(a2.get());
  CHECK(n.k8s_agent.is_enrolled("uid-web"));
  CHECK(n.pods.get("uid-web")->container_id == "sandbox-1");
  // The failed sandbox's probe-set entry went; the enrolled one's stayed.
  CHECK(n.host.entries == std::vector{std::pair<std::string, std::string>("10.0.0.7", "uid-web")});
}
