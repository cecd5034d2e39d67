// Sockets in tests: a unix socket's address, and accepting one TCP
// connection with the peer's IPv4 address as the test checks it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include "lib/unique_fd.h"

namespace ambient::test {

// The address of the unix socket at `path`; fails the test when the path
// does not fit.
inline sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  INFO("unix socket " << path);
  REQUIRE(path.size() < sizeof a.sun_path);
  std::strcpy(a.sun_path, path.c_str());
  return a;
}

struct Accepted {
  UniqueFd conn;
  std::string peer;  // the client's IPv4 address, e.g. "10.248.0.3"
};

// The next connection on IPv4 `listener` within `timeout`; nullopt when
// none came or accept failed.
inline std::optional<Accepted> accept_one(int listener, std::chrono::milliseconds timeout) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
  sockaddr_in from{};
  socklen_t len = sizeof from;
  UniqueFd conn(::accept4(listener, reinterpret_cast<sockaddr*>(&from), &len, SOCK_CLOEXEC));
  if (!conn.valid()) return std::nullopt;
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &from.sin_addr, buf, sizeof buf);
  return Accepted{std::move(conn), buf};
}

}  // namespace ambient::test
