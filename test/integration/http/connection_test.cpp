// How the agent's HTTP server ends a connection (docs/node-agent.md#cni-endpoint):
// a `Connection: close` request is answered and the connection closed by
// the server at once; one followed by more bytes still gets its whole
// answer; a keep-alive client can send its next request.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <future>
#include <string>

#include "http/server.h"
#include "lib/unique_fd.h"
#include "support/sockets.h"
#include "support/temp_dir.h"
#include "support/unix_http_server.h"

using namespace ambient;
using namespace std::chrono_literals;

namespace {

const std::string kClose =
    "POST /cmdadd HTTP/1.1\r\nHost: unix\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
const std::string kKeepAlive = "POST /cmdadd HTTP/1.1\r\nHost: unix\r\nContent-Length: 2\r\n\r\n{}";

UniqueFd connect_to(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  const sockaddr_un addr = test::unix_address(path);
  REQUIRE(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

void send_all(int fd, const std::string& data) {
  REQUIRE(::send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size()));
}

// Everything the server sends until `done` holds for what arrived, the
// server stops sending, or 2 s pass.
template <class Done>
std::string read_until(int fd, Done done) {
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (!done(got) && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) != 1) continue;
    char buf[1024];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// Whether the server has closed its end entirely (not only stopped
// sending) within `timeout`: a unix socket whose peer is gone reports a
// hang-up.
bool peer_closed(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, 0, 0};
    if (::poll(&p, 1, 20) == 1 && (p.revents & POLLHUP)) return true;
  }
  return false;
}

const auto kAnswered = [](const std::string& got) { return got.ends_with("enrolled\n"); };

}  // namespace

TEST_CASE("http: a Connection: close request is answered, then the server closes at once",
          "[http]") {
  test::TempDir dir;
  const std::string path = dir.path() + "/s.sock";
  test::UnixHttpServer server(path, [](const http::Request&) {
    return http::Response{200, "enrolled\n"};
  });
  UniqueFd fd = connect_to(path);
  send_all(fd.get(), kClose);
  const std::string answer = read_until(fd.get(), [](const std::string&) { return false; });
  CHECK(answer.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK_THAT(answer, Catch::Contains("Connection: close\r\n"));
  CHECK(answer.ends_with("\r\n\r\nenrolled\n"));
  // Closed, not held half-open until the client goes: the lingering close
  // would keep it for 2 s.
  CHECK(peer_closed(fd.get(), 1s));
}

TEST_CASE("http: bytes sent after a Connection: close request do not cut its answer short",
          "[http]") {
  test::TempDir dir;
  const std::string path = dir.path() + "/s.sock";
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  test::UnixHttpServer server(path, [&](const http::Request&) {
    entered.set_value();
    released.wait();
    return http::Response{200, "enrolled\n"};
  });
  UniqueFd fd = connect_to(path);
  send_all(fd.get(), kClose);
  // The request is parsed and its handler runs: what comes now waits,
  // unread, in the server's socket when the answer goes out. A close with
  // it unread would end the connection with a reset instead of an end of
  // stream (over TCP, dropping whatever of the answer is still queued).
  // Nothing may stop the test between the handler's start and its
  // release: the server's destructor would wait for it forever.
  const bool in_handler = entered.get_future().wait_for(5s) == std::future_status::ready;
  const ssize_t sent =
      in_handler ? ::send(fd.get(), kKeepAlive.data(), kKeepAlive.size(), MSG_NOSIGNAL) : -1;
  release.set_value();
  REQUIRE(in_handler);
  REQUIRE(sent == static_cast<ssize_t>(kKeepAlive.size()));
  const std::string answer = read_until(fd.get(), kAnswered);
  CHECK(answer.starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(answer.ends_with("\r\n\r\nenrolled\n"));
  pollfd p{fd.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  char c;
  const ssize_t n = ::recv(fd.get(), &c, 1, 0);
  INFO("recv: " << n << (n < 0 ? std::string(" ") + std::strerror(errno) : std::string()));
  CHECK(n == 0);
}

TEST_CASE("http: a keep-alive client is answered request after request on one connection",
          "[http]") {
  test::TempDir dir;
  const std::string path = dir.path() + "/s.sock";
  std::atomic<int> calls{0};
  test::UnixHttpServer server(path, [&](const http::Request&) {
    ++calls;
    return http::Response{200, "enrolled\n"};
  });
  UniqueFd fd = connect_to(path);
  for (int i = 0; i < 2; ++i) {
    send_all(fd.get(), kKeepAlive);
    const std::string answer = read_until(fd.get(), kAnswered);
    CHECK(answer.starts_with("HTTP/1.1 200 OK\r\n"));
    CHECK(answer.ends_with("\r\n\r\nenrolled\n"));
  }
  CHECK(calls == 2);
  CHECK_FALSE(peer_closed(fd.get(), 100ms));
}
