// A hand-driven ztunnel peer for unit tests of the agent's ZDS side: a
// real SOCK_SEQPACKET connection, with the test playing ztunnel's part.
#pragma once

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "netns/netns.h"
#include "zds.pb.h"
#include "zds/wire.h"

namespace ambient::test {

namespace pb = istio::workload::zds;
using namespace std::chrono_literals;

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/amb-zds-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

inline UniqueFd connect_peer(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strcpy(a.sun_path, path.c_str());
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

inline netns::NetnsRef own_netns() {
  auto ns = netns::Netns::open("/proc/self/ns/net");
  REQUIRE(ns);
  return std::make_shared<const netns::Netns>(std::move(*ns));
}

}  // namespace ambient::test
