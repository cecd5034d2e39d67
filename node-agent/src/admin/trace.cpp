#include "admin/trace.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/fsuid.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <regex>
#include <sstream>

#include "process/process.h"
#include "redirect/ebpf/programs.h"

namespace ambient::admin {

namespace {

// "::ffff:10.0.0.1" (a v4 connection on a dual-stack socket) is 10.0.0.1.
std::string unmapped(const std::string& a) {
  return a.rfind("::ffff:", 0) == 0 && a.find('.') != std::string::npos ? a.substr(7) : a;
}

std::string endpoint_text(const std::string& ip, uint16_t port) {
  return (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
}

constexpr uint8_t kTcpListen = 10;
// Who an inbound probe's socket belongs to: not root, so not kubelet.
constexpr uid_t kProbeUid = 65534;

bool is_ztunnel_mark(uint32_t mark) { return (mark & 0xfff) == kZtunnelMark; }

std::string ztunnel_kind(uint16_t port) {
  switch (port) {
    case 15001:
      return "ztunnel-outbound";
    case 15006:
      return "ztunnel-inbound";
    case 15008:
      return "ztunnel-hbone";
    case 15053:
      return "ztunnel-dns";
    default:
      return "";
  }
}

std::string describe_receiver(const std::string& kind) {
  if (kind == "ztunnel-outbound") return "ztunnel's outbound listener";
  if (kind == "ztunnel-inbound") return "ztunnel's inbound listener";
  if (kind == "ztunnel-hbone") return "ztunnel's HBONE listener";
  if (kind == "ztunnel-dns") return "ztunnel's DNS proxy";
  return kind;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
};

SockAddr to_sockaddr(const Endpoint& e) {
  SockAddr a;
  if (e.v6) {
    auto* s = reinterpret_cast<sockaddr_in6*>(&a.ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(e.port);
    ::inet_pton(AF_INET6, e.ip.c_str(), &s->sin6_addr);
    a.len = sizeof *s;
  } else {
    auto* s = reinterpret_cast<sockaddr_in*>(&a.ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(e.port);
    ::inet_pton(AF_INET, e.ip.c_str(), &s->sin_addr);
    a.len = sizeof *s;
  }
  return a;
}

Endpoint from_sockaddr(const sockaddr_storage& ss) {
  Endpoint e;
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &s->sin6_addr, text, sizeof text);
    e.port = ntohs(s->sin6_port);
    e.v6 = true;
  } else {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &s->sin_addr, text, sizeof text);
    e.port = ntohs(s->sin_port);
  }
  e.ip = unmapped(text);
  return e;
}

// The probe socket: non-blocking, marked, optionally bound (--from).
Result<UniqueFd> probe_socket(bool v6, bool udp, uint32_t mark, const std::string& from) {
  UniqueFd fd(::socket(v6 ? AF_INET6 : AF_INET,
                       (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return sys_error("socket");
  if (mark != 0 && ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    return sys_error("setsockopt(SO_MARK)");
  }
  if (!udp) {
    // RST on close: neither side keeps a TIME_WAIT socket after a trace.
    const linger l{.l_onoff = 1, .l_linger = 0};
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0) {
      return sys_error("setsockopt(SO_LINGER)");
    }
  }
  if (!from.empty()) {
    // A source address the node's netns need not own; the answer only
    // comes back where it is routed to this netns.
    const int one = 1;
    if (::setsockopt(fd.get(), v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_FREEBIND : IP_FREEBIND, &one,
                     sizeof one) < 0) {
      return sys_error("setsockopt(FREEBIND)");
    }
    SockAddr a = to_sockaddr({.ip = from, .port = 0, .v6 = v6});
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a.ss), a.len) < 0) {
      return sys_error("bind " + from);
    }
  }
  return fd;
}

// Waits for `events` on fd up to `timeout`: false on timeout.
Result<bool> wait_for(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{.fd = fd, .events = events, .revents = 0};
  for (;;) {
    const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("poll");
    return n > 0;
  }
}

// The netns's first global address of the family (a pod not enrolled: the
// agent knows no IP for it). Call inside the netns.
std::string first_address(bool v6) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) < 0) return "";
  std::string found;
  for (ifaddrs* i = list; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != (v6 ? AF_INET6 : AF_INET)) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, i->ifa_addr, v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
    Endpoint e = from_sockaddr(ss);
    if (e.ip.rfind("127.", 0) == 0 || e.ip == "::1" || e.ip.rfind("fe80", 0) == 0) continue;
    found = e.ip;
  }
  ::freeifaddrs(list);
  return found;
}

Result<CounterMap> read_counters(const TraceTarget& t, bool v6) {
  if (t.backend == "ebpf") {
    if (!t.ebpf) return make_error(Errc::Unavailable, "no eBPF programs are loaded");
    AMBIENT_ASSIGN_OR_RETURN(auto c, t.ebpf->counters());
    CounterMap m;
    for (size_t i = 0; i < c.size(); ++i) {
      m[std::string(redirect::ebpf::counter_name(static_cast<amb_counter>(i)))] = c[i];
    }
    return m;
  }
  std::vector<std::string> argv;
  if (t.backend == "nftables") {
    argv = {"nft", "list", "ruleset"};
  } else if (t.backend == "iptables-legacy" || t.backend == "iptables-nft") {
    std::string bin = t.backend + "-save";
    if (v6) bin.replace(0, 2, "ip6");
    argv = {bin, "-c"};
  } else {
    return make_error(Errc::Unavailable, "the " + t.backend + " backend has no counters to read");
  }
  std::optional<Result<CommandResult>> out;
  AMBIENT_RETURN_IF_ERROR(netns::run_in_netns(t.pod, [&]() -> Result<> {
    out.emplace(run_checked({.argv = argv, .timeout = std::chrono::seconds(5)}));
    return {};
  }));
  if (!*out) return std::move(*out).error().context(argv[0]);
  return t.backend == "nftables" ? parse_nft_counters((*out)->out)
                                 : parse_iptables_counters((*out)->out);
}

// A DNS query for the root's NS records: any DNS server answers it.
constexpr unsigned char kDnsQuery[] = {0x7a, 0x11, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                                       0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01};

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

std::string Endpoint::text() const { return endpoint_text(ip, port); }

Result<Endpoint> parse_endpoint(const std::string& s) {
  std::string host, port;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find("]:");
    if (close == std::string::npos) {
      return make_error(Errc::InvalidArgument, "\"" + s + "\" is not [IPv6]:PORT");
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos || s.find(':') != colon) {
      return make_error(Errc::InvalidArgument,
                        "\"" + s + "\" is not IP:PORT (IPv6 is written [IPv6]:PORT)");
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  Endpoint e;
  in6_addr a6{};
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    e.v6 = false;
  } else if (::inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    e.v6 = true;
  } else {
    return make_error(Errc::InvalidArgument, "\"" + host + "\" is not an IP address");
  }
  e.ip = host;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(port) == 0 || std::stoi(port) > 65535) {
    return make_error(Errc::InvalidArgument, "\"" + port + "\" is not a port (1-65535)");
  }
  e.port = static_cast<uint16_t>(std::stoi(port));
  return e;
}

CounterMap parse_iptables_counters(const std::string& save) {
  CounterMap m;
  std::string table;
  std::istringstream in(save);
  static const std::regex kRule(R"(^\[(\d+):(\d+)\] (-A .*)$)");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind('*', 0) == 0) {
      table = line.substr(1);
      continue;
    }
    std::smatch sm;
    if (!std::regex_match(line, sm, kRule)) continue;
    const std::string rule = sm[3];
    // The rules of our chains; the hooks into them (`-A OUTPUT -j
    // ISTIO_OUTPUT`) see every packet and decide nothing.
    if (rule.rfind("-A ISTIO_", 0) != 0) continue;
    m["-t " + table + " " + rule] += std::stoull(sm[1]);
  }
  return m;
}

CounterMap parse_nft_counters(const std::string& ruleset) {
  CounterMap m;
  std::string table, chain;
  std::istringstream in(ruleset);
  static const std::regex kTable(R"(^table \S+ (\S+) \{$)");
  static const std::regex kChain(R"(^chain (\S+) \{$)");
  static const std::regex kCounter(R"( ?counter packets (\d+) bytes \d+)");
  for (std::string line; std::getline(in, line);) {
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    line = line.substr(first);
    std::smatch sm;
    if (std::regex_match(line, sm, kTable)) {
      table = sm[1];
      continue;
    }
    if (std::regex_match(line, sm, kChain)) {
      chain = sm[1];
      continue;
    }
    if (table.rfind("istio", 0) != 0 || !std::regex_search(line, sm, kCounter)) continue;
    const uint64_t packets = std::stoull(sm[1]);
    std::string rule = sm.prefix().str() + sm.suffix().str();
    if (auto handle = rule.find(" # handle"); handle != std::string::npos) rule.resize(handle);
    m[table + " " + chain + ": " + rule] += packets;
  }
  return m;
}

std::vector<std::string> moved(const CounterMap& before, const CounterMap& after) {
  std::vector<std::string> out;
  for (const auto& [name, n] : after) {
    auto b = before.find(name);
    const uint64_t was = b == before.end() ? 0 : b->second;
    if (n > was) out.push_back(name + " (+" + std::to_string(n - was) + ")");
  }
  return out;
}

namespace {

std::string counted_text(const ProbeFacts& f) {
  if (!f.counters_error.empty()) return "no counters could be read (" + f.counters_error + ")";
  if (!f.enrolled) return "the pod is not enrolled, so no redirection of ours applies";
  if (f.decisions.empty()) return "no redirect rule or program decision counted it";
  return "counted: " + join(f.decisions, ", ");
}

bool ztunnel_listener(const ProbeFacts& f, uint16_t port, const char* proto) {
  return std::any_of(f.listeners.begin(), f.listeners.end(), [&](const netns::ListeningSocket& l) {
    return l.port == port && l.proto == proto && is_ztunnel_mark(l.mark);
  });
}

// The answer's receiver part, before the counters' sentence is appended.
struct Verdict {
  std::string receiver;
  uint32_t port = 0;
  std::string original_destination;
  std::string sentence;
};

Verdict udp_verdict(const ProbeFacts& f, const std::string& what, const std::string& mark_note) {
  if (f.outcome != "answered") {
    return {"nobody", 0, "", what + " got no answer within 1 s (" + f.outcome + ")" + mark_note};
  }
  if (f.dns_counted || (f.enrolled && f.dest.port == 53 && !f.decisions.empty() &&
                        ztunnel_listener(f, 15053, "udp"))) {
    return {"ztunnel-dns", 15053, f.dest.text(),
            what + " was answered by ztunnel's DNS proxy on port 15053, which sees " +
                f.dest.text() + " as the original destination"};
  }
  return {"app", f.dest.port, f.dest.text(),
          what + " was not captured" + mark_note + ": " + f.dest.text() + " answered itself"};
}

// A TCP connection some socket of the pod accepted.
Verdict accepted_verdict(const ProbeFacts& f, const netns::TcpSocket& s, const std::string& what,
                         const std::string& mark_note) {
  const std::string local = endpoint_text(unmapped(s.local_address), s.local_port);
  const std::string kind = ztunnel_kind(s.local_port);
  if (!kind.empty() && ztunnel_listener(f, s.local_port, "tcp")) {
    // REDIRECT: the accepted socket is on ztunnel's port, and ztunnel reads
    // the destination the probe connected to with SO_ORIGINAL_DST.
    const bool direct = s.local_port == f.dest.port;
    return {kind, s.local_port, f.dest.text(),
            what + (direct ? " reached " : " was taken by ") + describe_receiver(kind) +
                " on port " + std::to_string(s.local_port) + (direct ? " directly" : "") +
                ", which sees " + f.dest.text() + " as the original destination"};
  }
  if (is_ztunnel_mark(s.mark) || f.ebpf_captured) {
    // An eBPF hand-over: the accepted socket's own address is the original
    // destination (what getsockname() gives ztunnel).
    const std::string k = f.inbound ? "ztunnel-inbound" : "ztunnel-outbound";
    const uint32_t port = f.inbound ? 15006 : 15001;
    return {k, port, local,
            what + " was handed to " + describe_receiver(k) + " on port " + std::to_string(port) +
                ", which sees " + local + " as the original destination"};
  }
  const std::string snat =
      f.rewritten_source.empty()
          ? ""
          : " (the node rewrote its source to " + f.rewritten_source + ", kubelet's probe SNAT)";
  return {"app", s.local_port, local,
          what + snat + " reached the app's own listener on port " + std::to_string(s.local_port) +
              " directly, without ztunnel" + mark_note};
}

Verdict tcp_verdict(const ProbeFacts& f, const std::string& what, const std::string& mark_note) {
  if (f.outcome == "refused") {
    return {"nobody", 0, "", what + " was refused: nothing listens there" + mark_note};
  }
  if (f.outcome != "connected") {
    return {"nobody", 0, "", what + " got no answer within 1 s (" + f.outcome + ")" + mark_note};
  }
  if (f.server) return accepted_verdict(f, *f.server, what, mark_note);
  return {
      "app", f.dest.port, f.dest.text(),
      what + (f.inbound ? " was accepted outside the pod's netns (no socket of the pod holds it)"
                        : " was not captured and left the pod" + mark_note + ": " + f.dest.text() +
                              " answered itself")};
}

// The pod's socket that accepted the probe (whose peer is `client`); or,
// when the node rewrote the probe's source (kubelet's probe SNAT keeps the
// port), the one with the probe's port as its peer's.
void find_server(ProbeFacts& f, const std::vector<netns::TcpSocket>& socks,
                 const Endpoint& client) {
  for (bool exact : {true, false}) {
    for (const auto& s : socks) {
      if (f.server || s.state == kTcpListen || s.remote_port != client.port) continue;
      if (s.local_port == client.port && unmapped(s.local_address) == client.ip) continue;
      if (exact != (unmapped(s.remote_address) == client.ip)) continue;
      if (!exact && s.local_port != f.dest.port && ztunnel_kind(s.local_port).empty()) continue;
      f.server = s;
      if (!exact) f.rewritten_source = unmapped(s.remote_address);
    }
  }
}

// A UDP DNS query on the connected probe, and whether it got an answer.
Result<> probe_udp(ProbeFacts& f, const UniqueFd& probe, std::chrono::milliseconds timeout) {
  if (::send(probe.get(), kDnsQuery, sizeof kDnsQuery, 0) < 0) {
    f.outcome = errno_text(errno);
    return {};
  }
  AMBIENT_ASSIGN_OR_RETURN(bool ready, wait_for(probe.get(), POLLIN, timeout));
  char buf[1500];
  if (!ready) {
    f.outcome = "timeout";
  } else if (::recv(probe.get(), buf, sizeof buf, 0) < 0) {
    f.outcome = errno == ECONNREFUSED ? "refused" : errno_text(errno);
  } else {
    f.outcome = "answered";
  }
  return {};
}

// The TCP handshake of a connecting probe, and who accepted it.
Result<> probe_tcp(ProbeFacts& f, const UniqueFd& probe, const UniqueFd& diag,
                   std::chrono::milliseconds timeout) {
  AMBIENT_ASSIGN_OR_RETURN(bool ready, wait_for(probe.get(), POLLOUT, timeout));
  int err = 0;
  socklen_t len = sizeof err;
  if (!ready) {
    f.outcome = "timeout";
    return {};
  }
  if (::getsockopt(probe.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
    f.outcome = err == ECONNREFUSED ? "refused" : errno_text(err ? err : errno);
    return {};
  }
  f.outcome = "connected";
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  if (::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&ss), &sl) < 0) {
    return sys_error("getsockname");
  }
  AMBIENT_ASSIGN_OR_RETURN(auto socks, netns::tcp_sockets(diag));
  find_server(f, socks, from_sockaddr(ss));
  return {};
}

// The probe's facts before it runs: what it connects to.
Result<ProbeFacts> facts_for(const TraceTarget& t, const v1::TraceRequest& req) {
  ProbeFacts f;
  f.inbound = req.inbound();
  f.udp = !req.inbound() && req.udp();
  f.enrolled = t.enrolled;
  f.mark = req.inbound() ? 0 : req.mark();
  if (!f.inbound) {
    AMBIENT_ASSIGN_OR_RETURN(f.dest, parse_endpoint(req.to()));
    return f;
  }
  f.dest.port = static_cast<uint16_t>(req.port());
  f.dest.v6 = !req.from().empty() && req.from().find(':') != std::string::npos;
  for (const auto& ip : t.pod_ips) {
    if (f.dest.ip.empty() && (ip.find(':') != std::string::npos) == f.dest.v6) f.dest.ip = ip;
  }
  return f;
}

// The inbound probe socket. The node's probe SNAT matches kubelet's uid,
// usually root like us, and a socket's owner (skuid) is the creating
// thread's fsuid: made in the node's netns, the probe must be another
// user's, or the node takes it for kubelet's. Switching users needs
// CAP_SETUID, which the chart does not grant; then, when the agent has a
// netns of its own (the chart's default), the probe comes from there,
// routed through the node like any other pod's connection.
Result<UniqueFd> host_probe(const TraceTarget& t, const ProbeFacts& f, const std::string& from) {
  if (f.dest.ip.empty()) {
    return make_error(
        Errc::InvalidArgument,
        std::string("the pod has no ") + (f.dest.v6 ? "IPv6" : "IPv4") + " address to connect to");
  }
  UniqueFd probe;
  bool as_nobody = false;
  auto make = [&]() -> Result<> {
    const int was = ::setfsuid(kProbeUid);
    // setfsuid answers the previous fsuid whether or not it took; an
    // invalid uid changes nothing and answers the current one.
    as_nobody = static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1))) == kProbeUid;
    Result<UniqueFd> made = UniqueFd();
    if (as_nobody) made = probe_socket(f.dest.v6, false, 0, from);
    ::setfsuid(static_cast<uid_t>(was));
    AMBIENT_ASSIGN_OR_RETURN(probe, std::move(made));
    return {};
  };
  AMBIENT_RETURN_IF_ERROR((t.host ? netns::run_in_netns(*t.host, make) : make())
                              .context("prepare the probe on the node's side"));
  if (as_nobody) return probe;
  if (t.host && from.empty()) {
    AMBIENT_ASSIGN_OR_RETURN(probe, probe_socket(f.dest.v6, false, 0, ""));
    return probe;
  }
  return make_error(Errc::InvalidArgument,
                    std::string("an inbound probe made in the node's netns as root would be taken "
                                "for kubelet's by the node's probe SNAT, and making it as another "
                                "user needs CAP_SETUID, which the agent does not have; ") +
                        (from.empty() ? "the agent shares the node's netns, so there is no other "
                                        "place to probe from"
                                      : "--from binds an address of the node's netns, so the "
                                        "probe cannot come from the agent's own"));
}

}  // namespace

v1::TraceResponse classify(const ProbeFacts& f) {
  const std::string what = std::string(f.inbound ? "inbound " : "outbound ") +
                           (f.udp ? "UDP" : "TCP") + " to " + f.dest.text();
  const std::string mark_note =
      is_ztunnel_mark(f.mark) ? " (mark 0x539 is ztunnel's own, which the redirection exempts)"
                              : "";
  const Verdict v = f.udp ? udp_verdict(f, what, mark_note) : tcp_verdict(f, what, mark_note);
  v1::TraceResponse r;
  r.set_enrolled(f.enrolled);
  for (const auto& d : f.decisions) r.add_decisions(d);
  r.set_receiver(v.receiver);
  r.set_receiver_port(v.port);
  r.set_original_destination(v.original_destination);
  r.set_explanation(v.sentence + "; " + counted_text(f) + ".");
  return r;
}

Result<v1::TraceResponse> run_trace(const TraceTarget& t, const v1::TraceRequest& req) {
  AMBIENT_ASSIGN_OR_RETURN(ProbeFacts f, facts_for(t, req));
  // In the pod's netns: the diag socket, its listeners, and (outbound) the probe.
  UniqueFd diag, probe;
  AMBIENT_RETURN_IF_ERROR(netns::run_in_netns(t.pod, [&]() -> Result<> {
                            AMBIENT_ASSIGN_OR_RETURN(diag, netns::open_sock_diag_here());
                            AMBIENT_ASSIGN_OR_RETURN(f.listeners, netns::listening_sockets_here());
                            if (f.inbound && f.dest.ip.empty()) {
                              f.dest.ip = first_address(f.dest.v6);
                            }
                            if (!f.inbound) {
                              AMBIENT_ASSIGN_OR_RETURN(probe,
                                                       probe_socket(f.dest.v6, f.udp, f.mark, ""));
                            }
                            return {};
                          }).context("prepare the probe in " + t.pod.path()));
  if (f.inbound) {
    AMBIENT_ASSIGN_OR_RETURN(probe, host_probe(t, f, req.from()));
  }

  std::optional<CounterMap> before;
  if (t.enrolled) {
    auto c = read_counters(t, f.dest.v6);
    if (c) {
      before = std::move(*c);
    } else {
      f.counters_error = c.error().describe();
    }
  }
  const SockAddr dst = to_sockaddr(f.dest);
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&dst.ss), dst.len) < 0 &&
      errno != EINPROGRESS) {
    f.outcome = errno == ECONNREFUSED ? "refused" : errno_text(errno);
  } else if (f.udp) {
    AMBIENT_RETURN_IF_ERROR(probe_udp(f, probe, t.timeout));
  } else {
    AMBIENT_RETURN_IF_ERROR(probe_tcp(f, probe, diag, t.timeout));
  }
  probe = UniqueFd();  // closed with RST (SO_LINGER 0)

  if (before) {
    auto after = read_counters(t, f.dest.v6);
    if (after) {
      f.decisions = moved(*before, *after);
    } else {
      f.counters_error = after.error().describe();
    }
  }
  for (const auto& d : f.decisions) {
    for (const char* c : {"outbound (", "inbound (", "virtual_interface ("}) {
      if (t.backend == "ebpf" && d.rfind(c, 0) == 0) f.ebpf_captured = true;
    }
    if (d.find("15053") != std::string::npos || d.rfind("dns_query (", 0) == 0) {
      f.dns_counted = true;
    }
  }
  return classify(f);
}

}  // namespace ambient::admin
