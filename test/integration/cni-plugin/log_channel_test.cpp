// The plugin's log request to the agent's log.sock on real sockets
// (docs/cni-plugin.md#log-channel): it never holds a plugin run up past its
// budget, whatever the socket does, and a real log server gets the lines.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>

#include "http/root_only.h"
#include "http/server.h"
#include "lib/cni_event.h"
#include "lib/unique_fd.h"
#include "log/log.h"
#include "log/plugin_log.h"
#include "logger.h"
#include "support/sockets.h"
#include "support/temp_dir.h"
#include "support/unix_http_server.h"
#include "support/wait.h"

using namespace ambient;
using namespace std::chrono_literals;

namespace {

// A Unix stream socket bound at `path`, listening with `backlog` unless
// negative; nothing ever accepts on it.
UniqueFd bound(const std::string& path, int backlog) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  const sockaddr_un a = test::unix_address(path);
  REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  if (backlog >= 0) REQUIRE(::listen(fd.get(), backlog) == 0);
  return fd;
}

// Connections that fill `path`'s backlog: the next connect finds it full.
std::vector<UniqueFd> fill_backlog(const std::string& path) {
  std::vector<UniqueFd> conns;
  const sockaddr_un a = test::unix_address(path);
  for (int i = 0; i < 64; ++i) {
    UniqueFd c(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (::connect(c.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      REQUIRE(errno == EAGAIN);
      return conns;
    }
    conns.push_back(std::move(c));
  }
  FAIL("the backlog of " << path << " never filled");
  return conns;
}

// The next connection on `listener`, or none within 2 s (the sender gave up).
UniqueFd accept_soon(int listener) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, 2000) != 1) return UniqueFd();
  return UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

std::chrono::milliseconds timed_send(const std::string& path, const std::string& body) {
  const auto start = std::chrono::steady_clock::now();
  cni::send_log(path, body, cni::kLogSendBudget);
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start);
}

}  // namespace

TEST_CASE("plugin log: the request ends within its budget whatever log.sock does",
          "[cni-plugin][log]") {
  test::TempDir dir("amb-logsock-");
  const std::string path = dir.path() + "/log.sock";
  // Far more than a socket buffer takes, so a reader that does not read
  // keeps the sender waiting until its budget ends.
  const std::string big(size_t{4} << 20, 'x');
  std::vector<UniqueFd> held;
  std::thread peer;
  SECTION("no socket") { CHECK(timed_send(path, big) < 500ms); }
  SECTION("bound, nobody listening") {
    held.push_back(bound(path, -1));
    CHECK(timed_send(path, big) < 500ms);
  }
  SECTION("listening, never accepting") {
    held.push_back(bound(path, 8));
    CHECK(timed_send(path, big) < 500ms);
  }
  SECTION("backlog full") {
    held.push_back(bound(path, 0));
    for (auto& c : fill_backlog(path)) held.push_back(std::move(c));
    CHECK(timed_send(path, big) < 500ms);
  }
  SECTION("accepted, never read") {
    held.push_back(bound(path, 8));
    const int listener = held.front().get();
    peer = std::thread([&, listener] { held.push_back(accept_soon(listener)); });
    CHECK(timed_send(path, big) < 500ms);
  }
  SECTION("accepted and closed at once") {
    held.push_back(bound(path, 8));
    const int listener = held.front().get();
    peer = std::thread([listener] { accept_soon(listener); });
    CHECK(timed_send(path, big) < 500ms);
  }
  if (peer.joinable()) peer.join();
}

TEST_CASE("plugin log: the agent's log server writes the plugin's lines under cni-plugin",
          "[cni-plugin][log]") {
  test::TempDir dir("amb-logsock-");
  const std::string path = dir.path() + "/log.sock";
  std::ostringstream out;
  log::init(log::Levels{}, false, std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  std::mutex mu;
  std::vector<std::string> bodies;
  // Puts the log back on stdout also when a REQUIRE fails (declared first:
  // runs after the server is stopped).
  struct RestoreLog {
    ~RestoreLog() { log::init(log::Levels{}, false); }
  } restore_log;
  test::UnixHttpServer server(path,
                              [&](const http::Request& r) {
                                http::Response res = log::handle_plugin_log(r);
                                // Recorded once its lines are written: then `out` holds them.
                                std::lock_guard lock(mu);
                                bodies.push_back(r.body);
                                return res;
                              },
                              {.body_limit = log::kPluginLogBodyLimit,
                               .too_large_status = 413,
                               .admit = http::root_only(std::string(cni::kPluginLogSocket))});

  std::string err;
  const std::function<void(std::string_view)> sink = [&](std::string_view s) { err += s; };
  cni::Logger plugin_log(sink);
  plugin_log.keep_lines();
  plugin_log.log(cni::Logger::Info, "pod enrolled or skipped by the node agent", "demo/web-1");
  plugin_log.log(cni::Logger::Warn, "second line", "");
  const std::string body = cni::log_body(plugin_log.kept());
  CHECK(timed_send(path, body) < 500ms);

  REQUIRE(test::eventually([&] {
    std::lock_guard lock(mu);
    return !bodies.empty();
  }));
  std::string written;
  {
    std::lock_guard lock(mu);
    CHECK(bodies == std::vector<std::string>{body});
    written = out.str();
  }
  CHECK_THAT(written, Catch::Contains("\tinfo\tcni-plugin\tpod enrolled or skipped by the node "
                                      "agent\tpod=demo/web-1\n") &&
                          Catch::Contains("\twarn\tcni-plugin\tsecond line\n"));
}
