#include "zds/wire.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "zds.pb.h"

namespace ambient::zds {

namespace pb = istio::workload::zds;

namespace {

Result<> wait_for(int sock, short events, std::chrono::milliseconds timeout, const char* what) {
  pollfd p{sock, events, 0};
  for (;;) {
    int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (rc > 0) return {};
    if (rc == 0) {
      return make_error(Errc::Timeout, std::string("timed out after ") +
                                           std::to_string(timeout.count()) + " ms " + what);
    }
    if (errno != EINTR) return sys_error("poll");
  }
}

}  // namespace

Result<> send_message(int sock, const std::string& bytes, std::optional<int> pass_fd,
                      std::chrono::milliseconds timeout) {
  if (bytes.empty()) return make_error(Errc::Internal, "refusing to send an empty ZDS datagram");
  if (bytes.size() > kMaxMessage) {
    return make_error(Errc::InvalidArgument, "ZDS message of " + std::to_string(bytes.size()) +
                                                 " bytes exceeds ztunnel's 1024-byte limit");
  }
  AMBIENT_RETURN_IF_ERROR(wait_for(sock, POLLOUT, timeout, "waiting to send"));
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (pass_fd) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &*pass_fd, sizeof(int));
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(bytes.size())) return {};
    if (n >= 0) return make_error(Errc::Internal, "short ZDS send");
    if (errno == EINTR) continue;
    return sys_error("sendmsg");
  }
}

Result<Received> receive_message(int sock, std::chrono::milliseconds timeout) {
  AMBIENT_RETURN_IF_ERROR(wait_for(sock, POLLIN, timeout, "waiting for a message"));
  Received out;
  char buf[kMaxMessage];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return sys_error("recvmsg");
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      out.fds.emplace_back(fd);
    }
  }
  out.truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
  out.bytes.assign(buf, static_cast<size_t>(n));
  return out;
}

Result<std::string> decode_ack(const Received& r) {
  if (r.bytes.empty()) return make_error(Errc::Unavailable, "ztunnel closed the connection");
  if (r.truncated || !r.fds.empty()) {
    return make_error(Errc::Internal, "unexpected ZDS reply (truncated or carrying an fd)");
  }
  pb::WorkloadResponse resp;
  if (!resp.ParseFromString(r.bytes) || !resp.has_ack()) {
    return make_error(Errc::Internal, "ztunnel sent something that is not an Ack");
  }
  return resp.ack().error();
}

Result<int> decode_hello(const Received& r) {
  if (r.bytes.empty()) return make_error(Errc::Unavailable, "EOF");
  // Any fd that came with it is closed with `r`; ztunnel sends none.
  pb::ZdsHello h;
  if (!h.ParseFromString(r.bytes)) return make_error(Errc::Internal, "malformed hello");
  return static_cast<int>(h.version());
}

}  // namespace ambient::zds
