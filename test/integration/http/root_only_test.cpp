// Only root talks to the agent on pluginevent.sock: a connection from any
// other user is refused with 403 before its request is read
// (docs/node-agent.md#cni-endpoint). The caller is a child that became
// uid 65534 before connecting, as an unprivileged local user would be.
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <thread>

#include "cni_server/cni_handler.h"
#include "http/root_only.h"
#include "http/server.h"
#include "lib/cni_event.h"
#include "support/temp_dir.h"
#include "support/unix_http_server.h"

using namespace ambient;

namespace {

const char kRequest[] = "POST /cmdadd HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";

// Connects to `path` as `uid` (in a child), sends one request and returns
// the start of the answer.
std::string call_as(uid_t uid, const std::string& path) {
  int out[2];
  REQUIRE(::pipe(out) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    ::close(out[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(3);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(4);
    if (::write(fd, kRequest, sizeof kRequest - 1) < 0) ::_exit(5);
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0 && ::write(out[1], buf, static_cast<size_t>(n)) < 0) ::_exit(6);
    ::_exit(0);
  }
  ::close(out[1]);
  std::string answer;
  char buf[512];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) answer.append(buf, n);
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  INFO("child exit " << WEXITSTATUS(status));
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return answer;
}

}  // namespace

TEST_CASE("pluginevent.sock refuses a caller that is not root", "[cni_server][security]") {
  test::TempDir dir("amb-peercred-");
  ::chmod(dir.path().c_str(), 0755);  // reachable by uid 65534: only the peer check stands
  const std::string sock = dir.path() + "/pluginevent.sock";
  test::UnixHttpServer server(sock,
                              [](const http::Request&) {
                                return http::Response{200, "served\n"};
                              },
                              {.admit = http::root_only(std::string(cni::kPluginEventSocket))});
  ::chmod(sock.c_str(), 0666);

  CHECK_THAT(call_as(0, sock), Catch::StartsWith("HTTP/1.1 200") && Catch::Contains("served"));
  const std::string refused = call_as(65534, sock);
  CHECK_THAT(refused, Catch::StartsWith("HTTP/1.1 403") &&
                          Catch::Contains("root only: uid 65534 refused") &&
                          !Catch::Contains("served"));
}
