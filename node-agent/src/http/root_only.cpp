#include "http/root_only.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "log/log.h"

namespace ambient::http {

std::function<std::optional<Response>(int fd)> root_only(std::string socket_name) {
  return [name = std::move(socket_name)](int fd) -> std::optional<Response> {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      log::warn("{}: cannot identify the peer ({}): refused", name, std::strerror(errno));
      return Response{403, name + ": cannot identify the caller: refused\n"};
    }
    if (cred.uid == 0 || cred.uid == ::geteuid()) return std::nullopt;
    log::warn("{}: refused a connection from uid {} (pid {}): root only", name, cred.uid, cred.pid);
    return Response{403,
                    name + " serves root only: uid " + std::to_string(cred.uid) + " refused\n"};
  };
}

}  // namespace ambient::http
