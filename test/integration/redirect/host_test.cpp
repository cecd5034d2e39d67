// The host probe SNAT backends (iptables + libipset, nftables) against a
// fresh netns that plays the host: set entries and their owners, idempotent
// rules, no residue, and real probe traffic to a pod netns over a veth.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <optional>
#include <random>

#include "lib/unique_fd.h"
#include "netns/netns.h"
#include "process/process.h"
#include "redirect/detect.h"
#include "redirect/host_netns.h"
#include "redirect/iptables/host.h"
#include "redirect/nftables/host.h"
#include "support/backends.h"
#include "support/ip_address.h"
#include "support/require_ok.h"
#include "support/sockets.h"
#include "support/test_netns.h"
#include "support/text.h"

using namespace ambient;
using namespace ambient::redirect;
using NamedNetns = ambient::test::TestNetns;
using namespace ambient::test;
using namespace std::chrono_literals;

namespace {

// `kind`: a backend name (iptables-nft, iptables-legacy, nftables).
std::unique_ptr<HostRedirect> make_backend(const std::string& kind) {
  if (kind == "nftables") return std::make_unique<NftablesHostRedirect>();
  auto backend = backend_from_name(kind);
  REQUIRE(backend);
  auto variant = iptables_variant(*backend);
  REQUIRE(variant);
  return std::make_unique<IptablesHostRedirect>(IptablesOptions{.variant = *variant});
}

// Both IP families' nat rules (iptables) or the whole ruleset (nftables).
std::string dump_rules(const NamedNetns& host, const std::string& kind) {
  if (kind == "nftables") return host.exec({"nft", "list", "ruleset"});
  std::string v6 = kind;
  v6.replace(0, 2, "ip6");
  return host.exec({kind + "-save", "-t", "nat"}) + host.exec({v6 + "-save", "-t", "nat"});
}

// What holds the set entries, read with the tools rather than our code.
std::string dump_sets(const NamedNetns& host, const std::string& kind) {
  if (kind == "nftables") return host.exec({"nft", "list", "ruleset"});
  return host.exec({"ipset", "save"});
}

std::optional<std::string> uid_of(const std::vector<ProbeSetEntry>& entries, const IpAddress& a) {
  for (const auto& e : entries) {
    if (e.ip == a) return e.uid;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("host probe sets and rules: owners, idempotency and no residue", "[host]") {
  const std::string kind = GENERATE(from_range(kNetfilterBackends));
  INFO("backend " << kind);
  NamedNetns host("amb-host-");
  auto b = make_backend(kind);
  HostRedirect& h = *b;
  const IpAddress a = ip("10.253.1.2"), c = ip("10.253.1.3"), v6 = ip("fd00:253::2");

  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.ensure_sets(true); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.ensure_sets(true); }));  // exists already: fine
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.add_pod_ip(a, "uid-a"); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.add_pod_ip(c, "uid-c"); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.add_pod_ip(v6, "uid-v6"); }));

  auto listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(listed->size() == 3);
  CHECK(uid_of(*listed, a) == "uid-a");
  CHECK(uid_of(*listed, c) == "uid-c");
  CHECK(uid_of(*listed, v6) == "uid-v6");
  std::string sets = dump_sets(host, kind);
  CHECK_THAT(sets, Catch::Contains("10.253.1.2 comment \"uid-a\"") &&
                       Catch::Contains("fd00:253::2 comment \"uid-v6\""));

  // The IP moves to a newer pod: the entry takes the new owner.
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.add_pod_ip(a, "uid-a2"); }));
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(uid_of(*listed, a) == "uid-a2");
  CHECK(listed->size() == 3);

  // The old pod's removal must not take the new pod's entry.
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_pod_ip(a, "uid-a"); }));
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(uid_of(*listed, a) == "uid-a2");

  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_pod_ip(a, "uid-a2"); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_pod_ip(v6, "uid-v6"); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_pod_ip(a, "uid-a2"); }));  // absent: fine
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  REQUIRE(listed->size() == 1);
  CHECK(uid_of(*listed, c) == "uid-c");

  // An entry this instance never made (an earlier agent's): a new agent
  // that re-adds the IP for another pod still takes it over.
  auto fresh = make_backend(kind);
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return fresh->ensure_sets(true); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return fresh->add_pod_ip(c, "uid-c2"); }));
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  REQUIRE(listed->size() == 1);
  CHECK(uid_of(*listed, c) == "uid-c2");
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return fresh->add_pod_ip(c, "uid-c"); }));
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(uid_of(*listed, c) == "uid-c");

  // Rules: install twice (plus, for iptables, a stray duplicate jump an
  // older agent might have left) and find exactly one copy.
  HostProbeConfig cfg{.ipv6 = true, .kubelet_uid = 4242};
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.install_rules(cfg); }));
  if (kind != "nftables") host.exec({kind, "-t", "nat", "-A", "POSTROUTING", "-j", "ISTIO_POSTRT"});
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.install_rules(cfg); }));
  std::string rules = dump_rules(host, kind);
  INFO(rules);
  if (kind == "nftables") {
    CHECK(count_of(rules, "chain postrouting") == 1);
    CHECK(count_of(rules, "meta skuid 4242 ip daddr @istio-inpod-probes-v4") == 1);
    CHECK(count_of(rules, "meta skuid 4242 ip6 daddr @istio-inpod-probes-v6") == 1);
  } else {
    CHECK(count_of(rules, "-A POSTROUTING -j ISTIO_POSTRT") == 2);  // one per IP family
    CHECK(count_of(rules, "--uid-owner 4242 -m set --match-set istio-inpod-probes-v4") == 1);
    CHECK(count_of(rules, "--uid-owner 4242 -m set --match-set istio-inpod-probes-v6") == 1);
    CHECK(count_of(rules, "-A ISTIO_POSTRT") == 2);
  }
  // Installing rules never loses set entries (nft: `flush table` keeps them).
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(uid_of(*listed, c) == "uid-c");

  // With IPv6 off, IPv6 pod IPs are skipped, not errors.
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.ensure_sets(false); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.add_pod_ip(ip("fd00:253::9"), "uid-9"); }));
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK_FALSE(uid_of(*listed, ip("fd00:253::9")).has_value());

  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_rules(); }));
  rules = dump_rules(host, kind);
  CHECK(rules.find("ISTIO_POSTRT") == std::string::npos);
  CHECK(rules.find("postrouting") == std::string::npos);
  CHECK(rules.find("snat") == std::string::npos);
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_rules(); }));  // idempotent
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(listed->size() == 1);  // the sets outlive the rules

  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.flush_sets(); }));
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(listed->empty());

  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.destroy_sets(); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.destroy_sets(); }));  // idempotent
  CHECK(dump_sets(host, kind).find("istio") == std::string::npos);
  rules = dump_rules(host, kind);
  CHECK(rules.find("istio") == std::string::npos);
  CHECK(rules.find("ISTIO") == std::string::npos);
  listed = in_netns(host, [&] { return h.list_sets(); });
  AMBIENT_REQUIRE_OK(listed);
  CHECK(listed->empty());
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_pod_ip(c, "uid-c"); }));  // no sets: fine
  if (kind == "nftables") {
    // The table deleted behind our back: the next add makes it again (the
    // fast netlink path gets ENOENT and hands over to nft).
    AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.add_pod_ip(c, "uid-c"); }));
    listed = in_netns(host, [&] { return h.list_sets(); });
    AMBIENT_REQUIRE_OK(listed);
    CHECK(uid_of(*listed, c) == "uid-c");
    AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.destroy_sets(); }));
  }
}

TEST_CASE("bad pod UIDs never reach the sets", "[host]") {
  const std::string kind = GENERATE(from_range(kNfTablesBackends));
  NamedNetns host("amb-host-");
  auto b = make_backend(kind);
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return b->ensure_sets(false); }));
  auto r = in_netns(host, [&] { return b->add_pod_ip(ip("10.253.1.2"), "x\" } ; flush ruleset"); });
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::InvalidArgument);
}

namespace {

constexpr uid_t kKubeletUid = 4242;

// Connects to 10.253.0.2:port from the host netns, as `uid`: a child forked
// on a thread inside the netns inherits it, drops to the UID (raw syscalls:
// only async-signal-safe calls after fork) and then opens the socket, so
// the socket is owned by that UID as kubelet's would be.
Result<> connect_as(const NamedNetns& host, uid_t uid, uint16_t port) {
  return in_netns(host, [&]() -> Result<> {
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    ::inet_pton(AF_INET, "10.253.0.2", &dst.sin_addr);
    pid_t pid = ::fork();
    if (pid < 0) return sys_error("fork");
    if (pid == 0) {
      ::alarm(10);
      if (uid != 0 && (::syscall(SYS_setresgid, uid, uid, uid) != 0 ||
                       ::syscall(SYS_setresuid, uid, uid, uid) != 0)) {
        ::_exit(2);
      }
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0) ::_exit(3);
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&dst), sizeof dst) != 0) ::_exit(4);
      ::_exit(0);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0) {
      if (errno != EINTR) return sys_error("waitpid");
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      return make_error(Errc::Internal,
                        "connecting child failed (wait status " + std::to_string(st) + ")");
    }
    return {};
  });
}

// The source address of the next connection the pod's listener accepts.
std::string accept_peer(const UniqueFd& listener) {
  auto c = accept_one(listener.get(), 5s);
  return c ? c->peer : "<no connection>";
}

}  // namespace

TEST_CASE("kubelet's connections to an enrolled pod arrive from the probe SNAT address",
          "[host][traffic]") {
  const std::string kind = GENERATE(from_range(kNetfilterBackends));
  INFO("backend " << kind);
  NamedNetns host("amb-hhost-");
  NamedNetns pod("amb-hpod-");
  std::random_device rd;
  const std::string tag = std::to_string(rd() % 100000);
  const std::string veth_host = "ahh" + tag, veth_pod = "ahp" + tag;
  host.exec({"ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_pod, "netns",
             pod.name()});
  host.exec({"ip", "addr", "add", "10.253.0.1/24", "dev", veth_host});
  host.exec({"ip", "link", "set", veth_host, "up"});
  pod.exec({"ip", "addr", "add", "10.253.0.2/24", "dev", veth_pod});
  pod.exec({"ip", "link", "set", veth_pod, "up"});
  // Replies to 169.254.7.127 go back through the host, which un-SNATs them.
  pod.exec({"ip", "route", "add", "default", "via", "10.253.0.1"});

  UniqueFd listener;
  uint16_t port = 0;
  AMBIENT_REQUIRE_OK(in_netns(pod, [&]() -> Result<> {
    listener = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener.valid()) return sys_error("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    ::inet_pton(AF_INET, "10.253.0.2", &addr.sin_addr);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return sys_error("bind");
    }
    if (::listen(listener.get(), 8) != 0) return sys_error("listen");
    socklen_t len = sizeof addr;
    if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return sys_error("getsockname");
    }
    port = ntohs(addr.sin_port);
    return {};
  }));

  auto b = make_backend(kind);
  HostRedirect& h = *b;
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.ensure_sets(false); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.add_pod_ip(ip("10.253.0.2"), "pod-uid"); }));
  AMBIENT_REQUIRE_OK(in_netns(host, [&] {
    return h.install_rules({.match = ProbeMatch::KubeletUid, .kubelet_uid = kKubeletUid});
  }));

  SECTION("kubelet's UID is SNATed, root is not") {
    AMBIENT_REQUIRE_OK(connect_as(host, kKubeletUid, port));
    CHECK(accept_peer(listener) == "169.254.7.127");
    AMBIENT_REQUIRE_OK(connect_as(host, 0, port));
    CHECK(accept_peer(listener) == "10.253.0.1");
  }
  SECTION("a pod taken out of the set is no longer SNATed") {
    AMBIENT_REQUIRE_OK(
        in_netns(host, [&] { return h.remove_pod_ip(ip("10.253.0.2"), "pod-uid"); }));
    AMBIENT_REQUIRE_OK(connect_as(host, kKubeletUid, port));
    CHECK(accept_peer(listener) == "10.253.0.1");
  }
  SECTION("upstream's socket-exists match SNATs every host socket, root's too") {
    AMBIENT_REQUIRE_OK(
        in_netns(host, [&] { return h.install_rules({.match = ProbeMatch::SocketExists}); }));
    AMBIENT_REQUIRE_OK(connect_as(host, 0, port));
    CHECK(accept_peer(listener) == "169.254.7.127");
  }
  SECTION("without the rules nothing is SNATed") {
    AMBIENT_REQUIRE_OK(in_netns(host, [&] { return h.remove_rules(); }));
    AMBIENT_REQUIRE_OK(connect_as(host, kKubeletUid, port));
    CHECK(accept_peer(listener) == "10.253.0.1");
  }
}

// docs/redirection.md#host-probe-snat: an agent in a netns of its own (the
// chart's default) makes the probe sets and SNAT rule in the node's netns,
// from whatever thread calls it, and leaves its own netns alone.
TEST_CASE("host-side work through HostInNetns lands in the node's netns, not the caller's",
          "[host]") {
  const std::string kind = GENERATE(from_range(kNetfilterBackends));
  INFO("backend " << kind);
  NamedNetns node("amb-node-");
  NamedNetns agent("amb-agentns-");
  auto node_ns = netns::Netns::open(node.path());
  REQUIRE(node_ns);
  HostInNetns h(make_backend(kind), std::make_shared<const netns::Netns>(std::move(*node_ns)));
  const IpAddress a = ip("10.253.7.2");
  // The agent's threads live in `agent`; every call still reaches `node`.
  AMBIENT_REQUIRE_OK(in_netns(agent, [&]() -> Result<> {
    AMBIENT_RETURN_IF_ERROR(h.ensure_sets(false));
    AMBIENT_RETURN_IF_ERROR(h.install_rules({.kubelet_uid = 4242}));
    return h.add_pod_ip(a, "uid-a");
  }));
  CHECK_THAT(dump_rules(node, kind), Catch::Contains("4242"));
  CHECK_THAT(dump_sets(node, kind), Catch::Contains("10.253.7.2"));
  CHECK_THAT(dump_rules(agent, kind), !Catch::Contains("4242"));
  CHECK_THAT(dump_sets(agent, kind), !Catch::Contains("10.253.7.2"));
  auto listed = h.list_sets();
  AMBIENT_REQUIRE_OK(listed);
  CHECK(uid_of(*listed, a) == "uid-a");
  AMBIENT_REQUIRE_OK(h.remove_rules());
  AMBIENT_REQUIRE_OK(h.destroy_sets());
  CHECK_THAT(dump_sets(node, kind), !Catch::Contains("10.253.7.2"));
}
