// ztunnel misbehaving on the ZDS socket (docs/reliability.md#faults): the
// agent's real ZdsServer and Agent, a redirection backend that records which
// netns hold rules, and the test playing ztunnel over a real SOCK_SEQPACKET
// socket. Whatever ztunnel does, an enrollment either succeeded and ztunnel
// serves the pod, or failed with an error naming the pod and the cause and
// left nothing anywhere; every snapshot names each enrolled pod once.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "agent/agent.h"
#include "support/fake_redirect.h"
#include "support/files.h"
#include "support/require_ok.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "support/zds_peer.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace ambient::test;

namespace {

// Which netns hold our rules, by inode. An install can be held at a gate
// after the pod's routing is in (so after ztunnel's Add went out).
class RulesBackend : public redirect::RedirectBackend {
 public:
  std::string_view name() const override { return "rules"; }
  Result<> install(const netns::Netns& ns, const redirect::PodRedirectConfig&,
                   const std::function<void()>& routed) override {
    if (routed) routed();
    std::shared_future<void> gate;
    {
      std::lock_guard lk(mu_);
      gate = gate_;
    }
    if (gate.valid() && gate.wait_for(5s) != std::future_status::ready) {
      return make_error(Errc::Timeout, "the test never opened the install gate");
    }
    std::lock_guard lk(mu_);
    rules_.insert(ns.inode());
    return {};
  }
  Result<redirect::VerifyReport> verify(const netns::Netns& ns,
                                        const redirect::PodRedirectConfig&) const override {
    return redirect::VerifyReport{.complete = has_rules(ns)};
  }
  Result<> remove(const netns::Netns& ns, const redirect::PodRedirectConfig&) override {
    std::lock_guard lk(mu_);
    rules_.erase(ns.inode());
    return {};
  }
  void hold(std::shared_future<void> gate) {
    std::lock_guard lk(mu_);
    gate_ = std::move(gate);
  }
  bool has_rules(const netns::Netns& ns) const {
    std::lock_guard lk(mu_);
    return rules_.count(ns.inode()) > 0;
  }
  std::set<ino_t> rules() const {
    std::lock_guard lk(mu_);
    return rules_;
  }

 private:
  mutable std::mutex mu_;
  std::set<ino_t> rules_;
  std::shared_future<void> gate_;
};

struct TestPod {
  agent::PodIdentity id;
  netns::NetnsRef ns;  // a file of its own: its inode tells the pods apart
};

TestPod make_pod(const TempDir& dir, int i) {
  const std::string n = std::to_string(i);
  const std::string path = dir.path() + "/netns-" + n;
  write_file(path, "");
  auto ns =
      netns::Netns::from_fd_for_test(UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), path);
  REQUIRE(ns);
  return {.id = {.uid = "uid-" + n,
                 .info = {"pod-" + n, "demo", "sa"},
                 .ips = {*IpAddress::parse("10.0.1." + std::to_string(i + 1))}},
          .ns = std::make_shared<const netns::Netns>(std::move(*ns))};
}

// The agent as the app wires it, on a real ZDS server whose snapshots read
// the pod cache.
struct Node {
  TempDir dir{"amb-zds-fault-"};
  const std::string sock = dir.path() + "/z.sock";
  agent::Config cfg;
  RulesBackend backend;
  RecordingHost host;
  agent::PodCache pods;
  agent::StandalonePolicy policy{{"*"}, {}};
  std::unique_ptr<zds::ZdsServer> server;
  std::unique_ptr<agent::Agent> agent;

  explicit Node(std::chrono::milliseconds io_timeout = 1s) {
    auto srv = zds::ZdsServer::start({.socket_path = sock,
                                      .io_timeout = io_timeout,
                                      .snapshot = [this] { return pods.workloads(); },
                                      .accept_interval = 5ms});
    REQUIRE(srv);
    server = std::move(*srv);
    agent = std::make_unique<agent::Agent>(agent::AgentDeps{.config = cfg,
                                                            .backend = backend,
                                                            .host = host,
                                                            .zds = *server,
                                                            .pods = pods,
                                                            .policy = policy});
  }
  ~Node() {
    agent.reset();
    server.reset();  // its connection threads read `pods`
  }

  std::future<Result<>> add(const TestPod& p) {
    return std::async(std::launch::async, [this, &p] { return agent->add_pod(p.id, p.ns); });
  }
  std::set<std::string> enrolled() const {
    std::set<std::string> out;
    for (const auto& w : pods.workloads()) out.insert(w.uid);
    return out;
  }
};

// Nothing of the pod is left anywhere on our side.
void check_nowhere(const Node& n, const TestPod& p) {
  INFO("pod " << p.id.uid);
  CHECK_FALSE(n.agent->is_enrolled(p.id.uid));
  CHECK_FALSE(n.backend.has_rules(*p.ns));
  for (const auto& e : n.host.entries) CHECK(e.second != p.id.uid);
}

// Enrolls `p` with the test acking ztunnel's Add on `peer`.
void enroll(Node& n, int peer, const TestPod& p) {
  auto added = n.add(p);
  std::vector<UniqueFd> fds;
  auto m = next(peer, &fds);
  REQUIRE(m.has_add());
  REQUIRE(m.add().uid() == p.id.uid);
  REQUIRE(fds.size() == 1);
  send_raw(peer, ack());
  AMBIENT_REQUIRE_OK(added.get());
}

// ztunnel connecting: hello, then the whole snapshot acked. The UIDs the
// snapshot named, in order (a duplicate shows as one).
std::vector<std::string> connect_and_take_snapshot(const Node& n, UniqueFd& peer) {
  peer = connect_peer(n.sock);
  send_raw(peer.get(), hello());
  std::vector<std::string> uids;
  for (;;) {
    std::vector<UniqueFd> fds;
    auto m = next(peer.get(), &fds);
    if (m.has_snapshot_sent()) break;
    REQUIRE(m.has_add());  // every pod's netns is known: never Keep
    REQUIRE(fds.size() == 1);
    uids.push_back(m.add().uid());
    send_raw(peer.get(), ack());
  }
  send_raw(peer.get(), ack());
  return uids;
}

std::vector<std::string> sorted(const std::set<std::string>& s) { return {s.begin(), s.end()}; }

// A datagram with `fds` attached, as no ztunnel sends it.
void send_with_fds(int sock, const std::string& bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  REQUIRE(::sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

size_t open_fds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// The server hung up on `peer`: EOF, or a reset when it closed with a
// datagram of ours unread.
bool hung_up(int peer) {
  auto r = zds::receive_message(peer, 2s);
  if (r) return r->bytes.empty();
  return r.error().code == std::error_code(ECONNRESET, std::system_category());
}

}  // namespace

TEST_CASE(
    "ZDS fault: ztunnel gone mid-snapshot fails the enrollment queued behind it; the next "
    "snapshot holds exactly the enrolled pods",
    "[zds][fault]") {
  Node n;
  std::vector<TestPod> p;
  p.reserve(4);
  for (int i = 0; i < 4; ++i) p.push_back(make_pod(n.dir, i));
  {
    auto first = connect_past_empty_snapshot(*n.server, n.sock);
    for (int i = 0; i < 3; ++i) enroll(n, first.get(), p[i]);
  }  // ztunnel restarts
  REQUIRE(eventually([&] { return !n.server->has_connection(); }));

  UniqueFd second = connect_peer(n.sock);
  send_raw(second.get(), hello());
  std::vector<UniqueFd> fds;
  REQUIRE(next(second.get(), &fds).add().uid() == "uid-0");
  // A pod enrolled now waits for the snapshot in progress.
  auto added = n.add(p[3]);
  REQUIRE(eventually([&] { return n.backend.has_rules(*p[3].ns); }));
  SECTION("before acking an Add of the snapshot") {}
  SECTION("before acking SnapshotSent") {
    send_raw(second.get(), ack());
    REQUIRE(next(second.get(), &fds).add().uid() == "uid-1");
    send_raw(second.get(), ack());
    REQUIRE(next(second.get(), &fds).add().uid() == "uid-2");
    send_raw(second.get(), ack());
    REQUIRE(next(second.get()).has_snapshot_sent());
  }
  second.reset();
  auto r = added.get();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("pod demo/pod-3: hand netns to ztunnel") &&
                                       Catch::Contains("connection closed before request sent"));
  check_nowhere(n, p[3]);

  UniqueFd third;
  CHECK(connect_and_take_snapshot(n, third) == std::vector<std::string>{"uid-0", "uid-1", "uid-2"});
  // The pod's retry (kubelet's next ADD) goes through on the new connection.
  enroll(n, third.get(), p[3]);
  CHECK(n.enrolled().size() == 4);
}

TEST_CASE(
    "ZDS fault: ztunnel gone before acking a live Add fails the ADD naming the pod and leaves "
    "nothing",
    "[zds][fault]") {
  Node n;
  auto p0 = make_pod(n.dir, 0), p1 = make_pod(n.dir, 1);
  {
    auto first = connect_past_empty_snapshot(*n.server, n.sock);
    enroll(n, first.get(), p0);
    auto added = n.add(p1);
    std::vector<UniqueFd> fds;
    REQUIRE(next(first.get(), &fds).add().uid() == "uid-1");
    first.reset();  // ztunnel may even have started the proxy: the next snapshot drains it
    auto r = added.get();
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().describe(), Catch::Contains("pod demo/pod-1: hand netns to ztunnel") &&
                                         Catch::Contains("Add uid-1") &&
                                         Catch::Contains("ztunnel closed the connection"));
  }
  check_nowhere(n, p1);
  CHECK(n.backend.has_rules(*p0.ns));
  UniqueFd second;
  CHECK(connect_and_take_snapshot(n, second) == std::vector<std::string>{"uid-0"});
}

TEST_CASE(
    "ZDS fault: a reply that is no ack fails the ADD with the cause, rolls it back and closes the "
    "connection",
    "[zds][fault]") {
  struct Reply {
    const char* what;
    std::function<void(int)> send;
    const char* error;
  };
  UniqueFd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const int devnull = null_fd.get();
  const std::vector<Reply> replies = {
      {"bytes that are no protobuf message",
       [](int s) { send_raw(s, std::string("\xff\xff\xff\xff", 4)); }, "not an Ack"},
      {"a WorkloadResponse without an ack", [](int s) { send_raw(s, std::string("\x12\x00", 2)); },
       "not an Ack"},
      {"a ZdsHello instead of an ack", [](int s) { send_raw(s, hello()); }, "not an Ack"},
      {"an ack carrying an fd", [devnull](int s) { send_with_fds(s, ack(), {devnull}); },
       "carrying an fd"},
      {"an ack carrying two fds",
       [devnull](int s) {
         send_with_fds(s, ack(), {devnull, devnull});
       },
       "carrying an fd"},
      {"a reply larger than 1024 bytes",
       [](int s) {
         const std::string big = ack(std::string(2000, 'x'));
         REQUIRE(::send(s, big.data(), big.size(), MSG_NOSIGNAL) ==
                 static_cast<ssize_t>(big.size()));
       },
       "truncated"},
      {"no reply at all", [](int) {}, "timed out"},
  };
  const auto& reply = replies[GENERATE(range(0, 7))];
  INFO(reply.what);
  const size_t fds_before = open_fds();
  {
    Node n(300ms);
    auto p0 = make_pod(n.dir, 0), p1 = make_pod(n.dir, 1), p2 = make_pod(n.dir, 2);
    UniqueFd first = connect_past_empty_snapshot(*n.server, n.sock);
    enroll(n, first.get(), p0);
    const uint64_t conn = n.server->newest_connection();
    auto added = n.add(p1);
    std::vector<UniqueFd> fds;
    REQUIRE(next(first.get(), &fds).add().uid() == "uid-1");
    reply.send(first.get());
    auto r = added.get();
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().describe(), Catch::Contains("pod demo/pod-1: hand netns to ztunnel") &&
                                         Catch::Contains("Add uid-1") &&
                                         Catch::Contains(reply.error));
    check_nowhere(n, p1);
    // No reply is ever credited to a later request: the connection is gone.
    CHECK(hung_up(first.get()));
    REQUIRE(eventually([&] { return !n.server->has_connection(); }));
    (void)zds::send_message(first.get(), ack(), {}, 100ms);  // too late, read by nobody
    UniqueFd second;
    CHECK(connect_and_take_snapshot(n, second) == std::vector<std::string>{"uid-0"});
    CHECK(n.server->newest_connection() > conn);
    enroll(n, second.get(), p2);
    CHECK(n.enrolled() == std::set<std::string>{"uid-0", "uid-2"});
  }
  null_fd.reset();
  CHECK(open_fds() == fds_before - 1);  // every fd ztunnel sent was closed
}

TEST_CASE(
    "ZDS fault: a NACK fails only its own ADD, with ztunnel's message; the connection goes on",
    "[zds][fault]") {
  Node n;
  std::vector<TestPod> p;
  p.reserve(4);
  for (int i = 0; i < 4; ++i) p.push_back(make_pod(n.dir, i));
  UniqueFd peer = connect_past_empty_snapshot(*n.server, n.sock);
  const uint64_t conn = n.server->newest_connection();

  auto refused = n.add(p[0]);
  std::vector<UniqueFd> fds;
  REQUIRE(next(peer.get(), &fds).add().uid() == "uid-0");
  send_raw(peer.get(), ack("failure to start proxy : bind 15008 in uid-0"));
  auto r = refused.get();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(),
             Catch::Contains("pod demo/pod-0: hand netns to ztunnel") &&
                 Catch::Contains("got ack error: failure to start proxy : bind 15008 in uid-0"));
  check_nowhere(n, p[0]);
  CHECK(n.server->newest_connection() == conn);  // a NACK is an answer, not a broken connection

  // Two ADDs in flight at once: each outcome is its own pod's.
  auto a1 = n.add(p[1]);
  auto a2 = n.add(p[2]);
  std::map<std::string, std::future<Result<>>*> by_uid = {{"uid-1", &a1}, {"uid-2", &a2}};
  const std::string first_uid = next(peer.get(), &fds).add().uid();
  send_raw(peer.get(), ack("failure to start proxy : refused " + first_uid));
  const std::string second_uid = next(peer.get(), &fds).add().uid();
  REQUIRE(first_uid != second_uid);
  send_raw(peer.get(), ack());
  auto failed = by_uid.at(first_uid)->get();
  REQUIRE_FALSE(failed);
  CHECK_THAT(failed.error().describe(),
             Catch::EndsWith("got ack error: failure to start proxy : refused " + first_uid));
  AMBIENT_REQUIRE_OK(by_uid.at(second_uid)->get());
  enroll(n, peer.get(), p[3]);
  CHECK(n.enrolled() == std::set<std::string>{second_uid, "uid-3"});
  CHECK(n.server->newest_connection() == conn);
}

TEST_CASE(
    "ZDS fault: fds ztunnel never sends are closed: with the hello, between requests, with an ack",
    "[zds][fault]") {
  UniqueFd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const size_t fds_before = open_fds();
  {
    Node n;
    auto p0 = make_pod(n.dir, 0);
    // With the hello: it is a hello all the same.
    UniqueFd peer = connect_peer(n.sock);
    send_with_fds(peer.get(), hello(), {null_fd.get(), null_fd.get()});
    REQUIRE(next(peer.get()).has_snapshot_sent());
    send_raw(peer.get(), ack());
    REQUIRE(eventually([&] { return n.server->has_connection(); }));
    enroll(n, peer.get(), p0);
    // Unasked, with an fd: a protocol error, the connection closes.
    send_with_fds(peer.get(), ack(), {null_fd.get()});
    CHECK(hung_up(peer.get()));
    REQUIRE(eventually([&] { return !n.server->has_connection(); }));
    // With the SnapshotSent's ack: the new connection closes before it
    // counts as served; the next one gets the pod again.
    peer = connect_peer(n.sock);
    send_raw(peer.get(), hello());
    std::vector<UniqueFd> fds;
    REQUIRE(next(peer.get(), &fds).add().uid() == "uid-0");
    send_raw(peer.get(), ack());
    REQUIRE(next(peer.get()).has_snapshot_sent());
    send_with_fds(peer.get(), ack(), {null_fd.get()});
    CHECK(hung_up(peer.get()));
    UniqueFd last;
    CHECK(connect_and_take_snapshot(n, last) == std::vector<std::string>{"uid-0"});
    CHECK(n.agent->is_enrolled("uid-0"));
  }
  CHECK(open_fds() == fds_before);
}

// docs/zds.md#snapshot: a connection's snapshot is read from the pod cache
// when it starts; a pod whose Add was acked on the previous connection but
// which was not in the cache yet must still reach the new one.
TEST_CASE(
    "ZDS fault: a pod acked by a connection ztunnel replaced before the enrollment finished is "
    "sent to the new connection",
    "[zds][fault]") {
  Node n;
  auto p0 = make_pod(n.dir, 0);
  std::promise<void> gate;
  n.backend.hold(gate.get_future().share());
  UniqueFd first = connect_past_empty_snapshot(*n.server, n.sock);
  auto added = n.add(p0);
  std::vector<UniqueFd> fds;
  REQUIRE(next(first.get(), &fds).add().uid() == "uid-0");
  send_raw(first.get(), ack());
  first.reset();  // ztunnel reconnects while the rules are still going in
  REQUIRE(eventually([&] { return !n.server->has_connection(); }));
  UniqueFd second;
  CHECK(connect_and_take_snapshot(n, second).empty());  // not enrolled yet
  gate.set_value();
  // Without this Add, ztunnel drained the pod with that snapshot and never
  // hears of it again while the agent counts it enrolled.
  auto m = next(second.get(), &fds);
  REQUIRE(m.has_add());
  CHECK(m.add().uid() == "uid-0");
  CHECK(fds.size() == 1);
  send_raw(second.get(), ack());
  AMBIENT_REQUIRE_OK(added.get());
  CHECK(n.agent->is_enrolled("uid-0"));
}

TEST_CASE(
    "ZDS fault: a pod removed while ztunnel reconnects is not left in the new connection's "
    "snapshot",
    "[zds][fault]") {
  Node n;
  auto p0 = make_pod(n.dir, 0);
  UniqueFd first = connect_past_empty_snapshot(*n.server, n.sock);
  enroll(n, first.get(), p0);
  auto removed =
      std::async(std::launch::async, [&] { return n.agent->remove_pod("uid-0", false); });
  auto del = next(first.get());
  REQUIRE(del.has_del());
  // A second ztunnel connection (a rolling update, or a reconnect) takes
  // its snapshot while the pod is still in the cache.
  UniqueFd second;
  CHECK(connect_and_take_snapshot(n, second) == std::vector<std::string>{"uid-0"});
  SECTION("the first connection acks the Del") { send_raw(first.get(), ack()); }
  SECTION("the first connection closes before acking the Del") { first.reset(); }
  // Without this Del the second ztunnel would serve a pod that has no rules.
  auto again = next(second.get());
  REQUIRE(again.has_del());
  CHECK(again.del().uid() == "uid-0");
  send_raw(second.get(), ack());
  AMBIENT_REQUIRE_OK(removed.get());
  check_nowhere(n, p0);
}

namespace {

// ztunnel's per-process workload state (docs/zds.md#ztunnel-state), for a
// peer that reconnects over and over. Runs on its own thread, so it asserts
// nothing: what it finds wrong goes into `violations`.
struct ZtunnelModel {
  std::function<bool(const std::string&)> refuses;  // NACKs that pod's Adds
  std::map<std::string, ino_t> workloads;           // uid -> netns inode
  std::vector<std::string> violations;
  std::mt19937 rng{12345};
  int snapshots_cut = 0, adds_cut = 0, nacks = 0;

  bool chance(int one_in) { return std::uniform_int_distribution<int>(1, one_in)(rng) == 1; }

  struct Request {
    pb::WorkloadRequest msg;
    std::vector<UniqueFd> fds;
  };
  enum class Got { Request, Nothing, Closed };
  Got read(int fd, std::chrono::milliseconds timeout, Request& out) {
    auto r = zds::receive_message(fd, timeout);
    if (!r) return r.error().code == make_error_code(Errc::Timeout) ? Got::Nothing : Got::Closed;
    if (r->bytes.empty()) return Got::Closed;
    if (!out.msg.ParseFromString(r->bytes)) {
      violations.emplace_back("undecodable request");
      return Got::Closed;
    }
    out.fds = std::move(r->fds);
    return Got::Request;
  }
  bool answer(int fd, const std::string& error = "") {
    return static_cast<bool>(zds::send_message(fd, ack(error), {}, 1s));
  }
  // The netns an Add hands over, as ztunnel tells them apart.
  ino_t netns_of(const Request& req) {
    if (req.fds.size() != 1) {
      violations.emplace_back("Add " + req.msg.add().uid() + " with " +
                              std::to_string(req.fds.size()) + " fds");
      return 0;
    }
    struct stat st {};
    ::fstat(req.fds[0].get(), &st);
    return st.st_ino;
  }

  // One connection: hello, the snapshot, then live requests until `live`
  // says stop. Drops it at random points unless `steady`. Returns the
  // socket when it is still open.
  // `a` is made on the test's thread: unix_address asserts, and Catch's
  // assertions are for that thread only.
  UniqueFd serve(const sockaddr_un& a, bool steady, const std::function<bool()>& live) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 ||
        !zds::send_message(fd.get(), hello(), {}, 1s)) {
      violations.emplace_back("cannot connect");
      return {};
    }
    std::set<std::string> snapshot;
    for (;;) {
      Request r;
      if (read(fd.get(), 3s, r) != Got::Request) {
        violations.emplace_back("snapshot ended before SnapshotSent");
        return {};
      }
      auto* req = &r;
      if (req->msg.has_add()) {
        const std::string uid = req->msg.add().uid();
        if (!snapshot.insert(uid).second)
          violations.emplace_back("snapshot names " + uid + " twice");
        if (refuses(uid)) violations.emplace_back("snapshot names refused pod " + uid);
        workloads[uid] = netns_of(r);
        if (!steady && chance(12)) {
          ++snapshots_cut;
          return {};
        }
        if (!answer(fd.get())) return {};
      } else if (req->msg.has_snapshot_sent()) {
        std::erase_if(workloads, [&](const auto& w) { return !snapshot.count(w.first); });
        if (!steady && chance(12)) {
          ++snapshots_cut;
          return {};
        }
        if (!answer(fd.get())) return {};
        break;
      } else {
        violations.emplace_back("unexpected request " + std::to_string(req->msg.payload_case()) +
                                " in a snapshot");
        return {};
      }
    }
    while (live()) {
      Request r;
      const Got got = read(fd.get(), 2ms, r);
      if (got == Got::Nothing) continue;
      if (got == Got::Closed) {
        violations.emplace_back("the agent closed a connection that answered everything");
        return {};
      }
      auto* req = &r;
      if (req->msg.has_add()) {
        const std::string uid = req->msg.add().uid();
        const ino_t ino = netns_of(r);
        if (refuses(uid)) {
          ++nacks;
          if (!answer(fd.get(), "failure to start proxy : refused " + uid)) return {};
          continue;
        }
        workloads[uid] = ino;
        if (!steady && chance(8)) {
          ++adds_cut;
          return {};
        }
        if (!answer(fd.get())) return {};
      } else if (req->msg.has_del()) {
        workloads.erase(req->msg.del().uid());
        if (!answer(fd.get())) return {};
      } else {
        violations.emplace_back("unexpected request " + std::to_string(req->msg.payload_case()) +
                                " after the snapshot");
        return {};
      }
    }
    return fd;
  }
};

}  // namespace

TEST_CASE(
    "ZDS fault: 100 ztunnel reconnects during enrollments and removals lose, duplicate and "
    "misattribute nothing",
    "[zds][fault][storm]") {
  Node n;
  constexpr int kPods = 24, kReconnects = 100, kEnrollers = 3;
  std::vector<TestPod> pods;
  pods.reserve(kPods);
  for (int i = 0; i < kPods; ++i) pods.push_back(make_pod(n.dir, i));
  std::map<std::string, const TestPod*> by_uid;
  for (const auto& p : pods) by_uid[p.id.uid] = &p;
  auto refused = [](const std::string& uid) { return std::stoi(uid.substr(4)) % 5 == 3; };

  std::atomic<bool> stop_enrolling{false}, enrollers_done{false};
  std::atomic<int> reconnects{0};
  struct Tally {
    int added = 0, removed = 0, failed = 0, nacked = 0;
    std::vector<std::string> violations;
  };
  std::vector<Tally> tallies(kEnrollers);
  std::vector<std::thread> enrollers;
  enrollers.reserve(kEnrollers);
  for (int t = 0; t < kEnrollers; ++t) {
    enrollers.emplace_back([&, t] {
      Tally& tally = tallies[t];
      while (!stop_enrolling) {
        for (int i = t; i < kPods; i += kEnrollers) {
          const TestPod& p = pods[i];
          const std::string& uid = p.id.uid;
          if (n.agent->is_enrolled(uid)) {
            if (auto r = n.agent->remove_pod(uid, false); !r) {
              tally.violations.emplace_back(uid + ": remove failed: " + r.error().describe());
            } else {
              ++tally.removed;
            }
            continue;
          }
          auto r = n.agent->add_pod(p.id, p.ns);
          if (r) {
            ++tally.added;
            if (refused(uid)) tally.violations.emplace_back(uid + ": refused by ztunnel, enrolled");
            continue;
          }
          ++tally.failed;
          const std::string msg = r.error().describe();
          if (msg.find("pod demo/pod-" + std::to_string(i) + ":") == std::string::npos) {
            tally.violations.emplace_back(uid + ": error does not name its pod: " + msg);
          }
          if (const size_t at = msg.find("refused "); at != std::string::npos) {
            // The NACK text names the pod ztunnel refused: it must be this one.
            if (msg.substr(at + 8) != uid) {
              tally.violations.emplace_back(uid + ": got another pod's NACK: " + msg);
            } else {
              ++tally.nacked;
            }
          } else if (msg.find("timed out") != std::string::npos) {
            tally.violations.emplace_back(uid + ": timed out though ztunnel answers: " + msg);
          }
        }
        std::this_thread::sleep_for(1ms);
      }
    });
  }

  ZtunnelModel zt{.refuses = refused};
  const sockaddr_un zds_address = unix_address(n.sock);
  UniqueFd last;
  const auto started = std::chrono::steady_clock::now();
  std::thread ztunnel([&] {
    std::uniform_int_distribution<int> lifetime_ms(1, 12);
    for (int k = 0; k < kReconnects; ++k) {
      const bool final_one = k == kReconnects - 1;
      const auto until =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(lifetime_ms(zt.rng));
      if (final_one) reconnects = k + 1;
      UniqueFd fd = zt.serve(zds_address, final_one, [&] {
        if (final_one) return !enrollers_done.load();
        return std::chrono::steady_clock::now() < until;
      });
      reconnects = k + 1;
      if (final_one) last = std::move(fd);
      // ztunnel reconnects at once; the agent's accept limit spaces them.
    }
  });
  REQUIRE(eventually([&] { return reconnects == kReconnects; }, 60s));
  std::this_thread::sleep_for(50ms);  // enrollments against the last connection too
  stop_enrolling = true;
  for (auto& t : enrollers) t.join();
  enrollers_done = true;
  ztunnel.join();
  const auto took = std::chrono::steady_clock::now() - started;

  Tally sum;
  for (auto& t : tallies) {
    sum.added += t.added;
    sum.removed += t.removed;
    sum.failed += t.failed;
    sum.nacked += t.nacked;
    sum.violations.insert(sum.violations.end(), t.violations.begin(), t.violations.end());
  }
  INFO("took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
               << " ms; added " << sum.added << ", removed " << sum.removed << ", failed "
               << sum.failed << " (" << sum.nacked << " NACKed by ztunnel); ztunnel cut "
               << zt.snapshots_cut << " snapshots and " << zt.adds_cut << " Adds");
  for (const auto& v : sum.violations) UNSCOPED_INFO(v);
  CHECK(sum.violations.empty());
  for (const auto& v : zt.violations) UNSCOPED_INFO(v);
  CHECK(zt.violations.empty());
  // The storm did what it is for.
  CHECK(sum.added > 50);
  CHECK(sum.removed > 20);
  CHECK(sum.nacked > 5);
  CHECK(zt.adds_cut + zt.snapshots_cut > 5);

  // ztunnel, still connected, serves exactly the enrolled pods, each in its
  // own netns; and only they have rules and probe-set entries.
  const auto enrolled = n.enrolled();
  std::set<std::string> served;
  for (const auto& [uid, ino] : zt.workloads) {
    served.insert(uid);
    INFO(uid);
    REQUIRE(by_uid.count(uid));
    CHECK(ino == by_uid.at(uid)->ns->inode());
  }
  CHECK(sorted(served) == sorted(enrolled));
  std::set<ino_t> with_rules;
  std::vector<std::pair<std::string, std::string>> probes;
  for (const auto& uid : enrolled) {
    with_rules.insert(by_uid.at(uid)->ns->inode());
    probes.emplace_back(by_uid.at(uid)->id.ips[0].to_string(), uid);
  }
  CHECK(n.backend.rules() == with_rules);
  auto entries = n.host.entries;
  std::sort(entries.begin(), entries.end());
  std::sort(probes.begin(), probes.end());
  CHECK(entries == probes);
  for (const auto& uid : enrolled) CHECK_FALSE(refused(uid));

  // And a ztunnel that reconnects now gets them all, once each.
  REQUIRE(last.valid());
  last.reset();
  REQUIRE(eventually([&] { return !n.server->has_connection(); }));
  UniqueFd fresh;
  auto snapshot = connect_and_take_snapshot(n, fresh);
  CHECK(snapshot == sorted(enrolled));  // the cache's order: by UID, so no UID twice
}
