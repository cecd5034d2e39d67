// The agent's ZDS server against a hand-driven ztunnel peer on a real
// SOCK_SEQPACKET socket.
#include <sys/stat.h>

#include <future>

#include "support/wait.h"
#include "support/zds_peer.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace ambient::test;

TEST_CASE("ZDS: snapshot, live add and delete in lock-step", "[zds]") {
  TempDir dir("amb-zds-test-");
  auto ns = own_netns();
  std::vector<zds::Workload> snapshot = {
      {.uid = "u-enrolled", .info = {"web", "demo", "sa"}, .netns = ns},
      {.uid = "u-lost", .info = {"old", "demo", "sa"}, .netns = nullptr}};
  auto srv = zds::ZdsServer::start({.socket_path = dir.path() + "/z.sock",
                                    .io_timeout = 500ms,
                                    .snapshot = [&] { return snapshot; }});
  REQUIRE(srv);
  CHECK_FALSE((*srv)->has_connection());
  auto no_conn = (*srv)->add({.uid = "x", .netns = ns});
  REQUIRE_FALSE(no_conn);
  CHECK_THAT(no_conn.error().describe(), Catch::Contains("no ztunnel connection"));
  CHECK((*srv)->del("x"));  // nobody to tell: success

  auto peer = connect_peer(dir.path() + "/z.sock");
  send_raw(peer.get(), hello());
  std::vector<UniqueFd> fds;
  auto m1 = next(peer.get(), &fds);
  REQUIRE(m1.has_add());
  CHECK(m1.add().uid() == "u-enrolled");
  CHECK(m1.add().workload_info().name() == "web");
  CHECK(m1.add().workload_info().namespace_() == "demo");
  REQUIRE(fds.size() == 1);
  struct stat a {
  }, b{};
  ::fstat(fds[0].get(), &a);
  ::fstat(ns->fd(), &b);
  CHECK(a.st_ino == b.st_ino);  // the pod's netns itself crossed the socket
  send_raw(peer.get(), ack());
  auto m2 = next(peer.get());
  REQUIRE(m2.has_keep());
  CHECK(m2.keep().uid() == "u-lost");
  send_raw(peer.get(), ack("failure to start proxy : whatever"));  // logged, not fatal
  REQUIRE(next(peer.get()).has_snapshot_sent());
  send_raw(peer.get(), ack());
  eventually([&] { return (*srv)->has_connection(); }, 1s);

  auto added = std::async(std::launch::async, [&] {
    return (*srv)->add({.uid = "u-new", .info = {"n", "demo", "sa"}, .netns = ns});
  });
  auto m3 = next(peer.get(), &fds);
  REQUIRE(m3.has_add());
  CHECK(fds.size() == 1);
  send_raw(peer.get(), ack());
  CHECK(added.get());

  auto nacked = std::async(std::launch::async, [&] {
    return (*srv)->add({.uid = "u-bad", .info = {"n", "demo", "sa"}, .netns = ns});
  });
  REQUIRE(next(peer.get(), &fds).has_add());
  send_raw(peer.get(), ack("failure to start proxy : bind"));
  auto nr = nacked.get();
  REQUIRE_FALSE(nr);
  CHECK_THAT(nr.error().describe(), Catch::Contains("got ack error: failure to start proxy"));

  auto deleted = std::async(std::launch::async, [&] { return (*srv)->del("u-new"); });
  auto m4 = next(peer.get());
  REQUIRE(m4.has_del());
  CHECK(m4.del().uid() == "u-new");
  send_raw(peer.get(), ack());
  CHECK(deleted.get());
}

TEST_CASE("ZDS: an ack timeout closes the connection, so a late ack is never misread", "[zds]") {
  TempDir dir("amb-zds-test-");
  auto ns = own_netns();
  auto srv = zds::ZdsServer::start({.socket_path = dir.path() + "/z.sock",
                                    .io_timeout = 200ms,
                                    .snapshot = [] { return std::vector<zds::Workload>{}; }});
  REQUIRE(srv);
  auto peer = connect_past_empty_snapshot(**srv, dir.path() + "/z.sock");

  auto slow = std::async(std::launch::async, [&] {
    return (*srv)->add({.uid = "u-slow", .info = {"n", "demo", "sa"}, .netns = ns});
  });
  std::vector<UniqueFd> fds;
  REQUIRE(next(peer.get(), &fds).has_add());
  auto r = slow.get();  // we never ack
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("timed out"));
  // The late ack goes nowhere: the server has hung up.
  (void)zds::send_message(peer.get(), ack(), {}, 100ms);
  // The server hung up: EOF, or a reset when it closed with our late ack
  // still unread; anything but a timeout.
  auto eof = zds::receive_message(peer.get(), 2s);
  if (eof) {
    CHECK(eof->bytes.empty());
  } else {
    CHECK(eof.error().code == std::error_code(ECONNRESET, std::system_category()));
  }
  eventually([&] { return !(*srv)->has_connection(); }, 1s);
  CHECK_FALSE((*srv)->has_connection());
}
