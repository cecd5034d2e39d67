#include "netns/sock_diag.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <tuple>

#include "lib/unique_fd.h"

namespace ambient::netns {

namespace {

constexpr uint32_t kTcpListen = 10;  // TCP_LISTEN in the kernel's tcp_states.h

// One socket of a dump, before it is filtered into what the caller wants.
struct Entry {
  std::string local, remote;
  uint16_t local_port = 0, remote_port = 0;
  uint8_t state = 0;
  uint64_t inode = 0;
  uint32_t mark = 0;
  std::optional<bool> transparent;
};

template <class F>
Result<> dump_each(int fd, uint8_t family, uint8_t protocol, uint32_t states, F&& each) {
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = family;
  msg.req.sdiag_protocol = protocol;
  msg.req.idiag_states = states;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    return sys_error("sock_diag request");
  }
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("sock_diag answer");
    }
    // The netlink macros compare signed with unsigned and cast away const;
    // the walk is written out instead.
    const auto total = static_cast<size_t>(n);
    for (size_t off = 0; off + sizeof(nlmsghdr) <= total;) {
      auto* h = reinterpret_cast<nlmsghdr*>(buf + off);
      if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > total - off) break;
      off += NLMSG_ALIGN(h->nlmsg_len);
      if (h->nlmsg_type == NLMSG_DONE) return {};
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        // A family the kernel has no diag module for (IPv6 off) has no sockets.
        if (err->error == -ENOENT || err->error == -EAFNOSUPPORT) return {};
        return sys_error("sock_diag", -err->error);
      }
      auto* d = static_cast<inet_diag_msg*>(NLMSG_DATA(h));
      Entry s;
      char text[INET6_ADDRSTRLEN] = {};
      ::inet_ntop(d->idiag_family, d->id.idiag_src, text, sizeof text);
      s.local = text;
      ::inet_ntop(d->idiag_family, d->id.idiag_dst, text, sizeof text);
      s.remote = text;
      s.local_port = ntohs(d->id.idiag_sport);
      s.remote_port = ntohs(d->id.idiag_dport);
      s.state = d->idiag_state;
      s.inode = d->idiag_inode;
      const size_t attrs_end = NLMSG_LENGTH(0) + (h->nlmsg_len - NLMSG_LENGTH(0));
      for (size_t at = NLMSG_LENGTH(sizeof *d); at + sizeof(rtattr) <= attrs_end;) {
        auto* a = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(h) + at);
        if (a->rta_len < sizeof(rtattr) || a->rta_len > attrs_end - at) break;
        at += RTA_ALIGN(a->rta_len);
        if (a->rta_type == INET_DIAG_MARK && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
          std::memcpy(&s.mark, RTA_DATA(a), sizeof s.mark);
        }
        if (a->rta_type == INET_DIAG_SOCKOPT && RTA_PAYLOAD(a) >= sizeof(inet_diag_sockopt)) {
          inet_diag_sockopt o{};
          std::memcpy(&o, RTA_DATA(a), sizeof o);
          s.transparent = o.transparent != 0;
        }
      }
      each(std::move(s));
    }
  }
}

Result<> dump(int fd, uint8_t family, uint8_t protocol, std::vector<ListeningSocket>& out) {
  // TCP: listeners only. UDP has no listen state: every socket (an
  // unconnected bound one is what serves).
  const uint32_t states = protocol == IPPROTO_TCP ? (1u << kTcpListen) : ~0u;
  return dump_each(fd, family, protocol, states, [&](Entry e) {
    // A connected UDP socket is a client's, not a listener.
    if (protocol == IPPROTO_UDP && e.remote_port != 0) return;
    out.push_back({.proto = protocol == IPPROTO_TCP ? "tcp" : "udp",
                   .address = std::move(e.local),
                   .port = e.local_port,
                   .inode = e.inode,
                   .mark = e.mark,
                   .transparent = e.transparent});
  });
}

}  // namespace

std::string ListeningSocket::endpoint() const {
  const bool v6 = address.find(':') != std::string::npos;
  return proto + " " + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

Result<std::vector<ListeningSocket>> listening_sockets_here(bool tcp_only) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return sys_error("socket(NETLINK_SOCK_DIAG)");
  std::vector<ListeningSocket> out;
  for (uint8_t family : {AF_INET, AF_INET6}) {
    for (uint8_t proto : {IPPROTO_TCP, IPPROTO_UDP}) {
      if (tcp_only && proto != IPPROTO_TCP) continue;
      AMBIENT_RETURN_IF_ERROR(dump(fd.get(), family, proto, out));
    }
  }
  std::sort(out.begin(), out.end(), [](const ListeningSocket& a, const ListeningSocket& b) {
    return std::tie(a.proto, a.port, a.address) < std::tie(b.proto, b.port, b.address);
  });
  return out;
}

Result<UniqueFd> open_sock_diag_here() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return sys_error("socket(NETLINK_SOCK_DIAG)");
  return fd;
}

Result<std::vector<TcpSocket>> tcp_sockets(const UniqueFd& diag) {
  std::vector<TcpSocket> out;
  for (uint8_t family : {AF_INET, AF_INET6}) {
    AMBIENT_RETURN_IF_ERROR(dump_each(diag.get(), family, IPPROTO_TCP, ~0u, [&](Entry e) {
      out.push_back({.local_address = std::move(e.local),
                     .remote_address = std::move(e.remote),
                     .local_port = e.local_port,
                     .remote_port = e.remote_port,
                     .state = e.state,
                     .inode = e.inode,
                     .mark = e.mark});
    }));
  }
  return out;
}

std::vector<std::string> missing_ztunnel_listeners(const std::vector<ListeningSocket>& socks,
                                                   bool dns_capture) {
  std::vector<std::pair<std::string, uint16_t>> want = {
      {"tcp", 15001}, {"tcp", 15006}, {"tcp", 15008}};
  if (dns_capture) {
    want.emplace_back("tcp", 15053);
    want.emplace_back("udp", 15053);
  }
  std::vector<std::string> missing;
  for (const auto& w : want) {
    const bool found = std::any_of(socks.begin(), socks.end(), [&](const ListeningSocket& s) {
      return s.proto == w.first && s.port == w.second;
    });
    if (!found) missing.push_back(w.first + "/" + std::to_string(w.second));
  }
  return missing;
}

}  // namespace ambient::netns
