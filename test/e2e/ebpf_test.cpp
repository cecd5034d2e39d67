// What the eBPF backend must do exactly as the rules do, checked flow by
// flow against the nftables backend on identical nodes, and what only it
// can get wrong: a listener that is missing or not ztunnel's
// (docs/redirection.md#ebpf).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <map>
#include <regex>
#include <thread>

#include "process/process.h"
#include "support/backends.h"
#include "support/sim_node.h"
#include "support/sockets.h"
#include "support/wait.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;

namespace {

// One flow of the matrix: from which pod, to which address (a pod's role
// or the gateway) and port, over TCP or UDP, with which SO_MARK.
struct Flow {
  std::string from, to;
  int port;
  bool udp = false;
  bool v6 = false;
  unsigned mark = 0;
  std::string name() const {
    return from + "->" + to + (v6 ? "6" : "") + ":" + std::to_string(port) + (udp ? "/udp" : "") +
           (mark ? " mark " + std::to_string(mark) : "");
  }
};

const Flow kFlows[] = {
    {"a", "c", 8080},                      // outbound to a plain pod
    {"a", "b", 8080},                      // outbound to an ambient pod
    {"c", "b", 8080},                      // inbound
    {"c", "b", 15008},                     // HBONE: not redirected
    {"a", "gw", 53},                       // DNS over TCP
    {"a", "gw", 53, true},                 // DNS over UDP
    {"a", "c", 8080, false, false, 1337},  // ztunnel's own traffic
    {"a", "c", 8080, false, true},         // the same over IPv6
    {"c", "b", 8080, false, true},
    {"c", "b", 15008, false, true},
    {"a", "gw", 53, false, true},
    {"a", "gw", 53, true, true},
};

// Who answered each flow, with every address written as its role, so two
// nodes with different addresses compare equal.
std::map<std::string, std::string> answers(const std::string& backend) {
  NodeOptions opts;
  opts.backend = backend;
  opts.dual_stack = true;
  opts.dns_capture = true;
  SimNode node(opts);
  std::map<std::string, Pod> pods;
  pods["a"] = node.must_add_pod("a", "ambient-demo");
  pods["b"] = node.must_add_pod("b", "ambient-demo");
  pods["c"] = node.must_add_pod("c", "plain");
  std::vector<std::pair<std::string, std::string>> roles = {{node.gateway(), "gw"},
                                                            {node.gateway6(), "gw6"}};
  for (const auto& [role, p] : pods) {
    roles.emplace_back(p.ip, role);
    roles.emplace_back(p.ip6, role + "6");
  }
  for (const auto& [uid_role, p] : pods) roles.emplace_back(p.uid, "uid-" + uid_role);
  auto anonymous = [&](std::string s) {
    // Longest first: no address is a prefix of a longer one's replacement.
    std::sort(roles.begin(), roles.end(),
              [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    for (const auto& [text, role] : roles) {
      for (size_t at; (at = s.find(text)) != std::string::npos;) s.replace(at, text.size(), role);
    }
    return s;
  };
  std::map<std::string, std::string> out;
  for (const Flow& f : kFlows) {
    const Pod& from = pods.at(f.from);
    const std::string ip = f.to == "gw" ? (f.v6 ? node.gateway6() : node.gateway())
                                        : (f.v6 ? pods.at(f.to).ip6 : pods.at(f.to).ip);
    std::string answer;
    (void)in_pod(from, [&]() -> Result<> {
      auto reply = f.udp ? udp_exchange(ip, f.port) : tcp_exchange(ip, f.port, f.mark);
      // Nothing listens at a plain pod's 8080: an uncaptured flow fails.
      answer = reply ? *reply : "no answer";
      return {};
    });
    answer = anonymous(answer);
    // ztunnel's DNS proxy never reads the original destination (it asks its
    // own resolvers), and without conntrack there is none to read for TCP
    // (docs/redirection.md#ebpf-limits): DNS flows compare by listener.
    if (f.port == 53) answer = std::regex_replace(answer, std::regex(" orig_dst=\\S*"), "");
    out[f.name()] = answer;
  }
  return out;
}

// The agent's /metrics count of one eBPF decision (docs/redirection.md#ebpf-counters).
long long decision_count(SimNode& node, const std::string& decision) {
  std::smatch m;
  const std::string metrics = node.node_http_get(15014, "/metrics");
  REQUIRE(std::regex_search(
      metrics, m,
      std::regex(R"re(ambient_redirect_decisions_total\{backend="ebpf",decision=")re" + decision +
                 R"re("\} (\d+))re")));
  return std::stoll(m[1]);
}

}  // namespace

// docs/redirection.md#ebpf-decisions
TEST_CASE(
    "eBPF and nftables send every flow of the matrix to the same listener with the same "
    "original destination",
    "[e2e][ebpf]") {
  const auto nft = answers(kNftables);
  const auto ebpf = answers(kEbpf);
  for (const Flow& f : kFlows) {
    INFO("flow " << f.name());
    CHECK(ebpf.at(f.name()) == nft.at(f.name()));
  }
  // The matrix means something: captured, inbound, HBONE, DNS and
  // uncaptured flows each answered as the contract says.
  CHECK_THAT(nft.at("a->c:8080"), Catch::Contains("uid=uid-a port=15001 orig_dst=c:8080"));
  CHECK_THAT(nft.at("c->b6:8080"), Catch::Contains("uid=uid-b port=15006 orig_dst=[b6]:8080"));
  CHECK_THAT(nft.at("c->b:15008"), Catch::Contains("port=15008"));
  CHECK_THAT(nft.at("a->gw:53/udp"), Catch::Contains("port=15053"));
  CHECK(nft.at("a->c:8080 mark 1337") == "no answer");
}

// docs/redirection.md#ebpf-fail-closed
TEST_CASE("eBPF fails closed: ztunnel gone, or an impostor on ztunnel's DNS port", "[e2e][ebpf]") {
  NodeOptions opts;
  opts.backend = kEbpf;
  opts.dns_capture = true;
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  UniqueFd app = listen_in(c, 8080);  // a real destination, had capture been bypassed
  REQUIRE_THAT(in_pod_tcp(a, c.ip, 8080), Catch::Contains("port=15001"));

  SECTION("ztunnel stops: its listeners close, and nothing reaches the destination") {
    node.stop_ztunnel();
    auto r = in_pod(a, [&]() -> Result<> {
      auto reply = tcp_exchange(c.ip, 8080);
      if (reply) return make_error(Errc::Internal, "answered without ztunnel: " + *reply);
      return {};
    });
    CHECK(r);
    pollfd p{app.get(), POLLIN, 0};
    CHECK(::poll(&p, 1, 0) == 0);                      // the app never saw a connection
    CHECK(decision_count(node, "drop_no_proxy") > 0);  // counted as a fail-closed drop
  }
  SECTION("a socket of the app's on 127.0.0.1:15053 without ztunnel's mark gets no query") {
    node.stop_ztunnel();  // frees 15053 in the pod
    std::optional<std::string> got;
    auto r = in_pod(a, [&]() -> Result<> {
      UniqueFd imp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(15053);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::bind(imp.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        return sys_error("bind the impostor");
      }
      auto reply = udp_exchange(node.gateway(), 53);  // times out: dropped
      char buf[64];
      const ssize_t n = ::recv(imp.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) got = std::string(buf, static_cast<size_t>(n));
      return {};
    });
    REQUIRE(r);
    CHECK_FALSE(got);
  }
}

// docs/redirection.md#ebpf-decisions: capture starts with new connections;
// one open before enrollment goes on to its destination, both ways.
TEST_CASE("eBPF: a connection opened before enrollment keeps working after it", "[e2e][ebpf]") {
  NodeOptions opts;
  opts.backend = kEbpf;
  opts.kubernetes = true;
  SimNode node(opts);
  node.create_namespace("later");
  node.create_namespace("plain");
  Pod a = node.must_add_pod("a", "later");
  Pod c = node.must_add_pod("c", "plain");
  UniqueFd server = listen_in(c, 8080);
  UniqueFd client;
  REQUIRE(in_pod(a, [&]() -> Result<> {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(8080);
    ::inet_pton(AF_INET, c.ip.c_str(), &addr.sin_addr);
    client = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return sys_error("connect before enrollment");
    }
    return {};
  }));
  auto accepted = accept_one(server.get(), 3s);
  REQUIRE(accepted);

  node.label_namespace("later", "istio.io/dataplane-mode", "ambient");
  REQUIRE(eventually([&] { return node.pod_has_our_rules(a); }, 10s));
  REQUIRE(eventually([&] { return node.ztunnel_state()["workloads"].contains(a.uid); }, 10s));
  CHECK_THAT(in_pod_tcp(a, c.ip, 8080), Catch::Contains("port=15001"));  // new ones are captured

  // The old one still reaches C's app, and C's answers still reach A.
  auto send_recv = [](int from, int to, const std::string& text) {
    if (::send(from, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) {
      return std::string("send failed");
    }
    pollfd p{to, POLLIN, 0};
    if (::poll(&p, 1, 3000) != 1) return std::string("nothing arrived");
    char buf[64];
    const ssize_t n = ::recv(to, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("closed");
  };
  CHECK(send_recv(client.get(), accepted->conn.get(), "to c") == "to c");
  CHECK(send_recv(accepted->conn.get(), client.get(), "to a") == "to a");
}

// docs/redirection.md#ebpf-time-wait: ztunnel closes first, so its side of
// each connection waits in TIME_WAIT; the client comes back from the same
// port. Every reuse reaches ztunnel (never the app, never a timeout), in
// both directions, and still does while the agent is down.
TEST_CASE("eBPF: a client port reused against ztunnel's TIME_WAIT reaches ztunnel, agent or not",
          "[e2e][ebpf]") {
  NodeOptions opts;
  opts.backend = kEbpf;
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod b = node.must_add_pod("b", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  UniqueFd app = listen_in(b, 8080);  // where a bypassed inbound SYN would land
  const auto handoffs = [&] { return decision_count(node, "time_wait_handoff"); };
  const auto reuse = [&](const Pod& from, const std::string& ip, int from_port,
                         const std::string& listener) {
    for (int round = 0; round < 3; ++round) {
      INFO("from " << from.name << " port " << from_port << " to " << ip << ", round " << round);
      std::string reply;
      auto r = in_pod(from, [&]() -> Result<> {
        AMBIENT_ASSIGN_OR_RETURN(reply, tcp_exchange(ip, 8080, 0, from_port));
        return {};
      });
      if (!r) FAIL(r.error().describe());
      CHECK_THAT(reply, Catch::Contains(listener));
    }
  };
  // Every reuse after the first connection went through the hand-off.
  const long long before = handoffs();
  reuse(a, c.ip, 41001, "port=15001");  // outbound
  const long long after_outbound = handoffs();
  CHECK(after_outbound == before + 2);
  reuse(c, b.ip, 41002, "port=15006");  // inbound
  CHECK(handoffs() == after_outbound + 2);

  node.stop_agent();
  reuse(a, c.ip, 41001, "port=15001");
  reuse(c, b.ip, 41002, "port=15006");
  pollfd p{app.get(), POLLIN, 0};
  CHECK(::poll(&p, 1, 0) == 0);  // the app never got a connection
}

// docs/redirection.md#ebpf-fallback: ztunnel with ENABLE_ORIG_SRC=false
// makes listeners without IP_TRANSPARENT, which eBPF's IPv4 hand-over
// cannot use. Such a pod is moved to the rules once ztunnel is ready: it is
// captured, counted, logged, stays on the rules across an agent restart,
// and its DEL leaves nothing.
TEST_CASE("eBPF: a pod whose ztunnel listeners are not transparent is redirected by the rules",
          "[e2e][ebpf]") {
  NodeOptions opts;
  opts.backend = kEbpf;
  opts.ztunnel_orig_src = false;
  SimNode node(opts);
  Pod a = node.must_add_pod("a", "ambient-demo");
  Pod c = node.must_add_pod("c", "plain");
  const auto fallback_pods = [&] {
    std::smatch m;
    const std::string metrics = node.node_http_get(15014, "/metrics");
    REQUIRE(std::regex_search(metrics, m,
                              std::regex(R"re(\nambient_ebpf_rules_fallback_pods (\d+))re")));
    return std::stoi(m[1]);
  };
  CHECK_THAT(in_pod_tcp(a, c.ip, 8080), Catch::Contains("port=15001"));
  CHECK(node.pod_filters(a).find("amb_") == std::string::npos);
  CHECK(node.pod_has_our_rules(a));
  CHECK(fallback_pods() == 1);
  CHECK_THAT(node.agent_log(), Catch::Contains("has no IP_TRANSPARENT"));
  // ambientctl names the mechanism the pod actually has.
  auto ctl = run_command({.argv = {bin_path("ambientctl"), "--socket",
                                   node.dir() + "/run/admin.sock", "pods", "-o", "json"},
                          .timeout = 30s});
  REQUIRE(ctl);
  CHECK_THAT(ctl->out, Catch::Contains(R"("backend": "iptables-nft")"));

  node.stop_agent();
  node.start_agent();
  CHECK_THAT(in_pod_tcp(a, c.ip, 8080), Catch::Contains("port=15001"));
  CHECK(node.pod_filters(a).find("amb_") == std::string::npos);
  CHECK(fallback_pods() == 1);

  REQUIRE(node.del_pod(a).ok);
  CHECK_FALSE(node.pod_has_our_rules(a));
  CHECK(fallback_pods() == 0);
}
