// Sockets for the eBPF tests: ztunnel's as ztunnel makes them (SO_MARK
// 1337, SO_REUSEPORT, IP_TRANSPARENT on the proxy ports, dual-stack [::]),
// apps' and peers' plain ones, made inside a test netns, and the few
// waits the tests need (connect, accept, receive) with short timeouts.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include "lib/result.h"
#include "lib/unique_fd.h"
#include "support/test_netns.h"

namespace ambient::test::ebpf {

using namespace std::chrono_literals;

struct Endpoint {
  std::string ip;  // "10.99.0.1", "fd99::1", "::"
  uint16_t port = 0;
};

inline bool is_v6(const std::string& ip) { return ip.find(':') != std::string::npos; }

inline sockaddr_storage to_sockaddr(const Endpoint& e, socklen_t* len) {
  sockaddr_storage ss{};
  if (is_v6(e.ip)) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(e.port);
    ::inet_pton(AF_INET6, e.ip.c_str(), &a->sin6_addr);
    *len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(e.port);
    ::inet_pton(AF_INET, e.ip.c_str(), &a->sin_addr);
    *len = sizeof *a;
  }
  return ss;
}

// "ip:port", IPv6 in brackets; v4-mapped addresses as the kernel gives them.
inline std::string to_string(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
}

inline std::string local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return to_string(ss);
}

inline std::string peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return to_string(ss);
}

struct SocketOpts {
  int type = SOCK_STREAM;
  std::optional<uint32_t> mark;  // SO_MARK
  bool transparent = false;      // IP_TRANSPARENT (+ IPV6_TRANSPARENT)
  bool reuseport = false;
};

// ztunnel's in-pod sockets: marked, reuseport; the proxy ports transparent.
inline SocketOpts ztunnel_opts(int type = SOCK_STREAM, bool transparent = true) {
  return {.type = type, .mark = 1337, .transparent = transparent, .reuseport = true};
}

// A socket bound to `at` (TCP: listening) in the calling thread's netns.
inline Result<UniqueFd> bound_socket(const Endpoint& at, const SocketOpts& o) {
  const int family = is_v6(at.ip) ? AF_INET6 : AF_INET;
  UniqueFd fd(::socket(family, o.type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return sys_error("socket");
  const int one = 1, zero = 0;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6 && ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero)) {
    return sys_error("IPV6_V6ONLY");
  }
  if (o.mark && ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &*o.mark, sizeof *o.mark)) {
    return sys_error("SO_MARK");
  }
  if (o.reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
    return sys_error("SO_REUSEPORT");
  }
  if (o.transparent) {
    if (::setsockopt(fd.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one)) {
      return sys_error("IP_TRANSPARENT");
    }
    if (family == AF_INET6 &&
        ::setsockopt(fd.get(), SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one)) {
      return sys_error("IPV6_TRANSPARENT");
    }
  }
  socklen_t len = 0;
  sockaddr_storage ss = to_sockaddr(at, &len);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len)) {
    return sys_error("bind " + at.ip + ":" + std::to_string(at.port));
  }
  if (o.type == SOCK_STREAM && ::listen(fd.get(), 64)) return sys_error("listen");
  return fd;
}

// The same, made inside `ns`; fails the test when it cannot be made.
inline UniqueFd socket_in(const TestNetns& ns, const Endpoint& at, const SocketOpts& o = {}) {
  auto fd = in_netns(ns, [&] { return bound_socket(at, o); });
  AMBIENT_REQUIRE_OK(fd);
  return std::move(*fd);
}

// A non-blocking TCP connect from a socket made in `ns`, with `o`'s mark
// and transparency and bound to `from` when given; whether it completes
// is for connected() to tell.
inline UniqueFd connect_from(const TestNetns& ns, const Endpoint& to,
                             const std::optional<Endpoint>& from = std::nullopt,
                             const SocketOpts& o = {}) {
  auto fd = in_netns(ns, [&]() -> Result<UniqueFd> {
    const int family = is_v6(to.ip) ? AF_INET6 : AF_INET;
    UniqueFd s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s.valid()) return sys_error("socket");
    const int one = 1;
    if (o.mark && ::setsockopt(s.get(), SOL_SOCKET, SO_MARK, &*o.mark, sizeof *o.mark)) {
      return sys_error("SO_MARK");
    }
    if (o.transparent) {
      const int level = family == AF_INET6 ? SOL_IPV6 : SOL_IP;
      const int opt = family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
      if (::setsockopt(s.get(), level, opt, &one, sizeof one)) return sys_error("transparent");
    }
    socklen_t len = 0;
    if (from) {
      // A fixed source port is taken again at once once its last
      // connection is closed (the TIME_WAIT tests reuse it).
      ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_storage ss = to_sockaddr(*from, &len);
      if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len)) return sys_error("bind client");
    }
    sockaddr_storage ss = to_sockaddr(to, &len);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), len) && errno != EINPROGRESS) {
      return sys_error("connect");
    }
    return s;
  });
  AMBIENT_REQUIRE_OK(fd);
  return std::move(*fd);
}

// Whether the non-blocking connect on `fd` completed within `timeout`.
inline bool connected(int fd, std::chrono::milliseconds timeout = 2000ms) {
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

inline bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

// The next connection on `listener` within `timeout`, or an invalid fd.
inline UniqueFd accept_within(int listener, std::chrono::milliseconds timeout = 2000ms) {
  if (!readable(listener, timeout)) return UniqueFd();
  return UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
}

// Sends `out` one way and `back` the other over a connected pair; true
// when both arrive whole.
inline bool round_trip(int a, int b, const std::string& out = "ping",
                       const std::string& back = "pong") {
  auto one_way = [](int from, int to, const std::string& text) {
    if (::send(from, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size()))
      return false;
    if (!readable(to, 2000ms)) return false;
    char buf[64] = {};
    return ::recv(to, buf, sizeof buf, 0) == static_cast<ssize_t>(text.size()) &&
           text == std::string(buf, text.size());
  };
  return one_way(a, b, out) && one_way(b, a, back);
}

}  // namespace ambient::test::ebpf
