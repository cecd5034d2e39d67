#include "proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "lib/text.h"
#include "log.h"

namespace ambient::test {

namespace {

// <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h> clash
// with the glibc socket headers; both constants are 80 and kernel ABI.
constexpr int kSoOriginalDst = 80;      // SOL_IP, SO_ORIGINAL_DST
constexpr int kIp6tSoOriginalDst = 80;  // SOL_IPV6, IP6T_SO_ORIGINAL_DST

constexpr uint16_t kOutboundPort = 15001;
constexpr uint16_t kInboundPlaintextPort = 15006;
constexpr uint16_t kInboundHbonePort = 15008;
constexpr uint16_t kDnsPort = 15053;

struct BindSpec {
  int family;
  const char* ip;  // textual address for inet_pton
  uint16_t port;
  Proto proto;
  bool transparent;  // IP_TRANSPARENT, best effort (ENABLE_ORIG_SRC unset)
};

std::string spec_name(const BindSpec& s) {
  std::string host = s.family == AF_INET6 ? std::string("[") + s.ip + "]" : s.ip;
  return std::string(s.proto == Proto::Tcp ? "tcp " : "udp ") + host + ":" + std::to_string(s.port);
}

Result<> set_int_opt(int fd, int level, int name, int value, const char* what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) return sys_error(what);
  return {};
}

void set_int_opt_best_effort(int fd, int level, int name, int value, const char* what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) {
    log_debug(std::string("best-effort ") + what + " failed: " + std::strerror(errno));
  }
}

Result<BoundSocket> open_socket(const BindSpec& spec) {
  const std::string name = spec_name(spec);
  int type = (spec.proto == Proto::Tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  UniqueFd fd(::socket(spec.family, type, 0));
  if (!fd.valid()) return sys_error("socket for " + name);
  // The mark goes on right after creation, like ztunnel's socket factory:
  // the redirect rules skip marked packets, so an unmarked socket loops.
  AMBIENT_RETURN_IF_ERROR(
      set_int_opt(fd.get(), SOL_SOCKET, SO_MARK, static_cast<int>(kPacketMark), "SO_MARK")
          .context(name));
  // INPOD_PORT_REUSE default: lets a replacement proxy bind while the old
  // one drains.
  AMBIENT_RETURN_IF_ERROR(
      set_int_opt(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT").context(name));
  if (spec.proto == Proto::Tcp) {
    AMBIENT_RETURN_IF_ERROR(
        set_int_opt(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR").context(name));
  }
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (spec.family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(spec.port);
    ::inet_pton(AF_INET6, spec.ip, &a->sin6_addr);
    len = sizeof *a;
    // [::] is dual-stack (accepts v4-mapped clients); [::1] is v6 only.
    const bool any = IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr);
    AMBIENT_RETURN_IF_ERROR(
        set_int_opt(fd.get(), SOL_IPV6, IPV6_V6ONLY, any ? 0 : 1, "IPV6_V6ONLY").context(name));
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(spec.port);
    ::inet_pton(AF_INET, spec.ip, &a->sin_addr);
    len = sizeof *a;
  }
  if (spec.transparent) {
    // TPROXY rule sets need transparent listeners; REDIRECT does not, and
    // ztunnel ignores failures by default. The v6 socket also gets the
    // SOL_IP variant because it accepts v4-mapped traffic.
    set_int_opt_best_effort(fd.get(), SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
    if (spec.family == AF_INET6) {
      set_int_opt_best_effort(fd.get(), SOL_IPV6, IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT");
    }
  }
  if (spec.proto == Proto::Udp) {
    // Lets datagrams report their pre-TPROXY destination; with REDIRECT the
    // header was rewritten and this equals the local address.
    if (spec.family == AF_INET6) {
      set_int_opt_best_effort(fd.get(), SOL_IPV6, IPV6_RECVORIGDSTADDR, 1, "IPV6_RECVORIGDSTADDR");
    } else {
      set_int_opt_best_effort(fd.get(), SOL_IP, IP_RECVORIGDSTADDR, 1, "IP_RECVORIGDSTADDR");
    }
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return sys_error("bind " + name);
  }
  if (spec.proto == Proto::Tcp && ::listen(fd.get(), kListenBacklog) != 0) {
    return sys_error("listen " + name);
  }
  return BoundSocket{.fd = std::move(fd), .proto = spec.proto, .port = spec.port, .address = name};
}

// Must run on the thread that entered the pod netns: /proc/sys/net
// resolves against the reading thread's network namespace.
bool loopback_ipv6_enabled() {
  UniqueFd fd(::open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;  // no IPv6 in this kernel at all
  char c = 0;
  if (::read(fd.get(), &c, 1) != 1) return false;
  return c == '0';
}

bool is_errno(const Error& e, int err) {
  return e.code == std::error_code(err, std::system_category());
}

// ztunnel's ENABLE_ORIG_SRC: false makes its listeners without
// IP_TRANSPARENT (it then cannot spoof the source upstream).
bool orig_src() {
  const char* v = std::getenv("ENABLE_ORIG_SRC");
  return v == nullptr || std::string_view(v) != "false";
}

// Runs inside the pod netns.
Result<std::vector<BoundSocket>> open_sockets_here() {
  std::vector<BoundSocket> out;
  for (uint16_t port : {kOutboundPort, kInboundPlaintextPort, kInboundHbonePort}) {
    AMBIENT_ASSIGN_OR_RETURN(BoundSocket s,
                             open_socket({AF_INET6, "::", port, Proto::Tcp, orig_src()}));
    out.push_back(std::move(s));
  }
  for (Proto proto : {Proto::Tcp, Proto::Udp}) {
    AMBIENT_ASSIGN_OR_RETURN(BoundSocket s,
                             open_socket({AF_INET, "127.0.0.1", kDnsPort, proto, false}));
    out.push_back(std::move(s));
  }
  // ztunnel decides the DNS listener's IPv6 half per pod from lo's
  // disable_ipv6; an EADDRNOTAVAIL bind (no ::1 yet) is treated the same.
  if (!loopback_ipv6_enabled()) {
    log_info("ipv6 disabled on lo in the pod netns: skipping [::1]:15053");
    return out;
  }
  std::vector<BoundSocket> v6;
  for (Proto proto : {Proto::Tcp, Proto::Udp}) {
    auto s = open_socket({AF_INET6, "::1", kDnsPort, proto, false});
    if (!s) {
      if (is_errno(s.error(), EADDRNOTAVAIL)) {
        log_info("::1 not available in the pod netns: skipping [::1]:15053");
        return out;
      }
      return std::move(s).error();
    }
    v6.push_back(std::move(s).value());
  }
  for (auto& s : v6) out.push_back(std::move(s));
  return out;
}

sockaddr_storage unmap_v4(const sockaddr_storage& in) {
  if (in.ss_family != AF_INET6) return in;
  const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&in);
  if (!IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) return in;
  sockaddr_storage out{};
  auto* a4 = reinterpret_cast<sockaddr_in*>(&out);
  a4->sin_family = AF_INET;
  a4->sin_port = a6->sin6_port;
  std::memcpy(&a4->sin_addr, &a6->sin6_addr.s6_addr[12], 4);
  return out;
}

struct OriginalDst {
  std::string address;
  bool nat = false;
};

// SO_ORIGINAL_DST (v4, also for v4-mapped peers on a [::] socket), else
// IP6T_SO_ORIGINAL_DST (v6), else the local address as ztunnel does for
// TPROXYed or direct connections. "nat" means conntrack reports an
// original destination different from the local address: a socket in a
// netns with conntrack active also answers SO_ORIGINAL_DST for connections
// that were not NATed, with the local address.
OriginalDst tcp_original_dst(int fd, const sockaddr_storage& local_unmapped) {
  const std::string local = format_sockaddr(local_unmapped);
  sockaddr_storage orig{};
  socklen_t len = sizeof orig;
  int rc = -1;
  if (local_unmapped.ss_family == AF_INET) {
    len = sizeof(sockaddr_in);
    rc = ::getsockopt(fd, SOL_IP, kSoOriginalDst, &orig, &len);
  } else {
    len = sizeof(sockaddr_in6);
    rc = ::getsockopt(fd, SOL_IPV6, kIp6tSoOriginalDst, &orig, &len);
  }
  if (rc != 0) return {.address = local, .nat = false};
  std::string address = format_sockaddr(unmap_v4(orig));
  bool nat = address != local;
  return {.address = std::move(address), .nat = nat};
}

std::string record_line(const std::string& uid, uint16_t port, Proto proto, const std::string& peer,
                        const std::string& local, const OriginalDst& orig) {
  std::string line =
      "{\"uid\":" + text::json_quote(uid) + ",\"port\":" + std::to_string(port) + ",\"proto\":\"" +
      (proto == Proto::Tcp ? "tcp" : "udp") + "\",\"peer\":" + text::json_quote(peer) +
      ",\"local\":" + text::json_quote(local) + ",\"orig_dst\":" + text::json_quote(orig.address) +
      ",\"nat\":" + (orig.nat ? "true" : "false") + "}\n";
  return line;
}

std::string reply_line(const std::string& uid, uint16_t port, const std::string& orig_dst) {
  return "ztunnel-emulator uid=" + uid + " port=" + std::to_string(port) + " orig_dst=" + orig_dst +
         "\n";
}

}  // namespace

Result<std::vector<BoundSocket>> open_proxy_sockets(int netns_fd) {
  Result<std::vector<BoundSocket>> out = make_error(Errc::Internal, "proxy thread did not run");
  // A fresh thread that never leaves the pod netns and dies when done
  // (docs/node-agent.md#threads): nothing ever runs in the wrong namespace.
  std::thread worker([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      out = sys_error("setns(CLONE_NEWNET)");
      return;
    }
    out = open_sockets_here();
  });
  worker.join();
  return out;
}

std::string format_sockaddr(const sockaddr_storage& in) {
  sockaddr_storage addr = unmap_v4(in);
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "unknown(family=" + std::to_string(addr.ss_family) + ")";
}

Result<Recorder> Recorder::open(const std::string& path) {
  if (path.empty()) return Recorder(UniqueFd());
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd.valid()) return sys_error("open record file " + path);
  return Recorder(std::move(fd));
}

void Recorder::record(const std::string& line) const {
  if (!fd_.valid()) return;
  ssize_t n = ::write(fd_.get(), line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) {
    log_error(std::string("writing the record file failed: ") +
              (n < 0 ? std::strerror(errno) : "short write"));
  }
}

Result<std::unique_ptr<ListenerServer>> ListenerServer::start(Recorder recorder) {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return sys_error("epoll_create1");
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return sys_error("eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0) {
    return sys_error("epoll_ctl(eventfd)");
  }
  std::unique_ptr<ListenerServer> server(
      new ListenerServer(std::move(recorder), std::move(epoll), std::move(wake)));
  server->thread_ = std::thread([s = server.get()] { s->serve(); });
  return server;
}

ListenerServer::~ListenerServer() {
  stop_.store(true);
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_.get(), &one, sizeof one);
  (void)ignored;
  if (thread_.joinable()) thread_.join();
}

void ListenerServer::add(uint64_t proxy_id, const std::string& uid,
                         std::vector<BoundSocket> sockets) {
  std::lock_guard lock(mu_);
  for (auto& s : sockets) {
    uint64_t key = next_key_++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, s.fd.get(), &ev) != 0) {
      // Cannot happen for a fresh socket; the listener would sit unserved.
      log_error("epoll_ctl add " + s.address + " for uid " + uid + ": " + std::strerror(errno));
      continue;
    }
    listeners_.emplace(key, Listener{.proxy_id = proxy_id, .uid = uid, .socket = std::move(s)});
  }
}

void ListenerServer::remove(uint64_t proxy_id) {
  std::lock_guard lock(mu_);
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if (it->second.proxy_id != proxy_id) {
      ++it;
      continue;
    }
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.socket.fd.get(), nullptr);
    log_debug("closed " + it->second.socket.address + " of uid " + it->second.uid);
    it = listeners_.erase(it);  // closes the fd
  }
}

void ListenerServer::serve() {
  constexpr int kMaxEvents = 32;
  epoll_event events[kMaxEvents];
  while (!stop_.load()) {
    int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log_error(std::string("epoll_wait: ") + std::strerror(errno));
      return;
    }
    std::lock_guard lock(mu_);
    for (int i = 0; i < n; ++i) {
      uint64_t key = events[i].data.u64;
      if (key == 0) continue;  // wake-up: the loop condition checks stop_
      auto it = listeners_.find(key);
      if (it == listeners_.end()) continue;  // closed since epoll_wait returned
      if (it->second.socket.proto == Proto::Tcp) {
        on_tcp_ready(it->second);
      } else {
        on_udp_ready(it->second);
      }
    }
  }
}

void ListenerServer::on_tcp_ready(const Listener& l) {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    UniqueFd conn(::accept4(l.socket.fd.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len,
                            SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!conn.valid()) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        log_warn("accept on " + l.socket.address + ": " + std::strerror(errno));
      }
      return;
    }
    sockaddr_storage local{};
    socklen_t local_len = sizeof local;
    ::getsockname(conn.get(), reinterpret_cast<sockaddr*>(&local), &local_len);
    const sockaddr_storage local_unmapped = unmap_v4(local);
    const OriginalDst orig = tcp_original_dst(conn.get(), local_unmapped);
    const std::string peer_text = format_sockaddr(peer);
    const std::string local_text = format_sockaddr(local_unmapped);
    recorder_.record(record_line(l.uid, l.socket.port, Proto::Tcp, peer_text, local_text, orig));
    log_info("accepted tcp uid=" + l.uid + " port=" + std::to_string(l.socket.port) +
             " peer=" + peer_text + " local=" + local_text + " orig_dst=" + orig.address +
             " nat=" + (orig.nat ? "true" : "false"));
    const std::string reply = reply_line(l.uid, l.socket.port, orig.address);
    // A fresh socket's send buffer always holds one short line.
    if (::send(conn.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
      log_warn("reply to " + peer_text + ": " + std::strerror(errno));
    }
    // FIN instead of RST where possible: drain what the client already
    // sent, since closing with unread data resets the connection.
    ::shutdown(conn.get(), SHUT_WR);
    char sink[4096];
    while (::recv(conn.get(), sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
  }
}

void ListenerServer::on_udp_ready(const Listener& l) {
  for (;;) {
    char buf[65536];
    sockaddr_storage peer{};
    iovec iov{buf, sizeof buf};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(sockaddr_in6))];
    msghdr msg{};
    msg.msg_name = &peer;
    msg.msg_namelen = sizeof peer;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(l.socket.fd.get(), &msg, MSG_DONTWAIT);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        log_warn("recvmsg on " + l.socket.address + ": " + std::strerror(errno));
      }
      return;
    }
    sockaddr_storage local{};
    socklen_t local_len = sizeof local;
    ::getsockname(l.socket.fd.get(), reinterpret_cast<sockaddr*>(&local), &local_len);
    const std::string local_text = format_sockaddr(local);
    OriginalDst orig{.address = local_text, .nat = false};
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      const bool v4 = c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR;
      const bool v6 = c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR;
      if (!v4 && !v6) continue;
      sockaddr_storage dst{};
      std::memcpy(&dst, CMSG_DATA(c),
                  std::min<size_t>(c->cmsg_len - CMSG_LEN(0), sizeof(sockaddr_storage)));
      // The header's destination on arrival: differs from the local
      // address only under TPROXY. REDIRECT rewrote the header, and the
      // emulator does not ask conntrack, so "nat" stays false for UDP.
      orig.address = format_sockaddr(dst);
    }
    const std::string peer_text = format_sockaddr(peer);
    recorder_.record(record_line(l.uid, l.socket.port, Proto::Udp, peer_text, local_text, orig));
    log_info("received udp uid=" + l.uid + " port=" + std::to_string(l.socket.port) +
             " peer=" + peer_text + " local=" + local_text + " orig_dst=" + orig.address +
             " bytes=" + std::to_string(n));
    const std::string reply = reply_line(l.uid, l.socket.port, orig.address);
    if (::sendto(l.socket.fd.get(), reply.data(), reply.size(), MSG_DONTWAIT,
                 reinterpret_cast<sockaddr*>(&peer), msg.msg_namelen) < 0) {
      log_warn("udp reply to " + peer_text + ": " + std::strerror(errno));
    }
  }
}

}  // namespace ambient::test
