// A hand-driven ztunnel peer for unit tests of the agent's ZDS side: a
// real SOCK_SEQPACKET connection, with the test playing ztunnel's part.
#pragma once

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "netns/netns.h"
#include "support/sockets.h"
#include "support/temp_dir.h"
#include "support/wait.h"
#include "zds.pb.h"
#include "zds/wire.h"
#include "zds/zds_server.h"

namespace ambient::test {

namespace pb = istio::workload::zds;
using namespace std::chrono_literals;

inline UniqueFd connect_peer(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un a = unix_address(path);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

inline void send_raw(int fd, const std::string& bytes) {
  REQUIRE(zds::send_message(fd, bytes, {}, 1s));
}

inline std::string hello() { return std::string("\x08\x01", 2); }

inline std::string ack(const std::string& err = "") {
  pb::WorkloadResponse r;
  r.mutable_ack()->set_error(err);
  std::string s;
  r.SerializeToString(&s);
  return s;
}

inline pb::WorkloadRequest next(int fd, std::vector<UniqueFd>* fds = nullptr) {
  auto r = zds::receive_message(fd, 2s);
  REQUIRE(r);
  REQUIRE_FALSE(r->bytes.empty());
  pb::WorkloadRequest m;
  REQUIRE(m.ParseFromString(r->bytes));
  if (fds)
    *fds = std::move(r->fds);
  else
    REQUIRE(r->fds.empty());
  return m;
}

// Connects to `server` at `path` as ztunnel does when the snapshot is
// empty: hello, then SnapshotSent acked. Returns once the server counts
// the connection.
inline UniqueFd connect_past_empty_snapshot(const zds::ZdsServer& server, const std::string& path) {
  UniqueFd peer = connect_peer(path);
  send_raw(peer.get(), hello());
  REQUIRE(next(peer.get()).has_snapshot_sent());
  send_raw(peer.get(), ack());
  REQUIRE(eventually([&] { return server.has_connection(); }, 1s));
  return peer;
}

inline netns::NetnsRef own_netns() {
  auto ns = netns::Netns::open("/proc/self/ns/net");
  REQUIRE(ns);
  return std::make_shared<const netns::Netns>(std::move(*ns));
}

}  // namespace ambient::test
