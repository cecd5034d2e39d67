// Only root may be ztunnel: every ZDS connection is handed the netns of
// every enrolled pod, so the socket is 0600 and a peer of any other user is
// closed before it is sent anything (docs/node-agent.md#socket-security). The
// caller is a child that became uid 65534 before connecting.
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "support/temp_dir.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace std::chrono_literals;

namespace {

// Connects to `path` as `uid` (in a child), says hello as ztunnel does and
// reports what the server sent first: "message", "closed" or "nothing" (no
// answer within 2 s).
std::string first_answer_as(uid_t uid, const std::string& path) {
  int out[2];
  REQUIRE(::pipe(out) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    ::close(out[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(3);
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::_exit(4);
    // ztunnel speaks first: ZdsHello{version: V1}. Refused, the send may
    // already fail.
    const unsigned char hello[] = {0x08, 0x01};
    (void)::send(fd, hello, sizeof hello, MSG_NOSIGNAL);
    pollfd p{fd, POLLIN, 0};
    const char* what = "nothing";
    if (::poll(&p, 1, 2000) > 0) {
      char buf[4096];
      what = ::recv(fd, buf, sizeof buf, 0) > 0 ? "message" : "closed";
    }
    if (::write(out[1], what, std::strlen(what)) < 0) ::_exit(5);
    ::_exit(0);
  }
  ::close(out[1]);
  std::string answer;
  char buf[64];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) answer.append(buf, n);
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  INFO("child exit " << WEXITSTATUS(status));
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return answer;
}

}  // namespace

TEST_CASE("the ZDS socket is 0600 and closes a peer that is not root unanswered",
          "[zds][security]") {
  test::TempDir dir("amb-zds-peer-");
  ::chmod(dir.path().c_str(), 0755);  // reachable by uid 65534 once the socket mode is opened
  const std::string sock = dir.path() + "/ztunnel.sock";
  auto srv = zds::ZdsServer::start(
      {.socket_path = sock, .snapshot = [] { return std::vector<zds::Workload>{}; }});
  REQUIRE(srv);
  struct stat st {};
  REQUIRE(::stat(sock.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == ::geteuid());
  // With the mode opened up, only the peer check stands between uid 65534
  // and the pods' netns.
  REQUIRE(::chmod(sock.c_str(), 0666) == 0);
  CHECK(first_answer_as(65534, sock) == "closed");
  // Root, as ztunnel runs, gets its snapshot (an empty one ends in
  // SnapshotSent).
  CHECK(first_answer_as(0, sock) == "message");
}
