// What ztunnel sends the agent over ZDS, as the agent receives it: one
// SOCK_SEQPACKET datagram with 0 to 3 fds attached (byte 0 picks how many),
// up to 2 KiB (longer than the agent's 1 KiB buffer, so truncation is
// covered), read by the real receive path and decoded as an ack and as a
// hello.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "zds/wire.h"

using namespace std::chrono_literals;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 2049) return 0;
  const int nfds = data[0] % 4;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  ambient::UniqueFd ours(sv[0]), theirs(sv[1]);
  ambient::UniqueFd owned[3];
  int fds[3] = {-1, -1, -1};
  for (int i = 0; i < nfds; ++i) {
    owned[i].reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    fds[i] = owned[i].get();
  }
  iovec iov{const_cast<uint8_t*>(data + 1), size - 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  if (::sendmsg(theirs.get(), &msg, MSG_NOSIGNAL) < 0) return 0;
  auto r = ambient::zds::receive_message(ours.get(), 0ms);
  if (!r) return 0;
  (void)ambient::zds::decode_ack(*r);
  (void)ambient::zds::decode_hello(*r);
  return 0;
}
