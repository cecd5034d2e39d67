// The eBPF backend against a real pod netns joined to a peer netns by a
// veth named eth0 on both sides, with sockets standing in for ztunnel
// (bound as ztunnel binds them), an app and a peer: every capture path
// with real connections, v4 and v6, plus install/verify/remove.
#include <bpf/bpf.h>
#include <linux/ethtool.h>
#include <linux/pkt_cls.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>

#include "integration/redirect/ebpf/sockets.h"
#include "redirect/ebpf/backend.h"
#include "redirect/ebpf/programs.h"
#include "redirect/ebpf/tw_link.h"
#include "redirect/nftables/backend.h"
#include "support/bpffs.h"
#include "support/random.h"
#include "support/test_netns.h"
#include "support/wait.h"

using namespace ambient;
using namespace ambient::redirect;
using namespace ambient::test::ebpf;
using ambient::test::TestNetns;

namespace {

// A pod and a peer: pod 10.99.0.2 / fd99::2, peer 10.99.0.1 / fd99::1 and
// the probe SNAT address 169.254.7.127. Traffic only between the two.
struct Pair {
  TestNetns pod{"amb-ebpf-pod-"};
  TestNetns peer{"amb-ebpf-peer-"};

  Pair() {
    pod.exec({"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
              peer.name()});
    for (auto [ns, v4, v6] : {std::tuple{&pod, "10.99.0.2/24", "fd99::2/64"},
                              std::tuple{&peer, "10.99.0.1/24", "fd99::1/64"}}) {
      ns->exec({"ip", "addr", "add", v4, "dev", "eth0"});
      ns->exec({"ip", "addr", "add", v6, "dev", "eth0", "nodad"});
      ns->exec({"ip", "link", "set", "eth0", "up"});
    }
    peer.exec({"ip", "addr", "add", "169.254.7.127/32", "dev", "eth0"});
    pod.exec({"ip", "route", "add", "default", "via", "10.99.0.1"});
    pod.exec({"ip", "-6", "route", "add", "default", "via", "fd99::1"});
  }
};

// The pod netns settings the capture must not depend on
// (docs/redirection.md#ebpf-dns, checksums): reverse-path filtering in each
// mode, and software checksums on the pod's interface (veth offloads them
// by default, which would hide a rewrite that leaves a wrong checksum).
const std::vector<std::string> kPodSettings = {"rp_filter=0", "rp_filter=1", "rp_filter=2",
                                               "tx checksum offload off"};

void apply_setting(const TestNetns& pod, std::string_view setting) {
  if (setting.rfind("rp_filter=", 0) == 0) {
    const std::string mode(setting.substr(setting.find('=') + 1));
    for (const char* dev : {"all", "default", "eth0", "lo"}) {
      pod.exec({"sysctl", "-q", "-w", "net.ipv4.conf." + std::string(dev) + ".rp_filter=" + mode});
    }
    return;
  }
  auto off = in_netns(pod, []() -> Result<int> {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ethtool_value v{.cmd = ETHTOOL_STXCSUM, .data = 0};
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    ifr.ifr_data = reinterpret_cast<char*>(&v);
    if (::ioctl(s.get(), SIOCETHTOOL, &ifr) != 0) return sys_error("ETHTOOL_STXCSUM on eth0");
    return 0;
  });
  AMBIENT_REQUIRE_OK(off);
}

// ztunnel's in-pod sockets as ztunnel makes them (docs/zds.md), the app's
// listener on 8080, and the peer's server on 9090 and resolver on 53.
struct Sockets {
  UniqueFd outbound, inbound, hbone, dns_udp4, dns_tcp4, dns_udp6, dns_tcp6;
  UniqueFd app, peer_server, peer_resolver;

  explicit Sockets(const Pair& p) {
    outbound = socket_in(p.pod, {"::", 15001}, ztunnel_opts());
    inbound = socket_in(p.pod, {"::", 15006}, ztunnel_opts());
    hbone = socket_in(p.pod, {"::", 15008}, ztunnel_opts());
    dns_udp4 = socket_in(p.pod, {"127.0.0.1", 15053}, ztunnel_opts(SOCK_DGRAM, false));
    dns_tcp4 = socket_in(p.pod, {"127.0.0.1", 15053}, ztunnel_opts(SOCK_STREAM, false));
    dns_udp6 = socket_in(p.pod, {"::1", 15053}, ztunnel_opts(SOCK_DGRAM, false));
    dns_tcp6 = socket_in(p.pod, {"::1", 15053}, ztunnel_opts(SOCK_STREAM, false));
    app = socket_in(p.pod, {"::", 8080});
    peer_server = socket_in(p.peer, {"::", 9090});
    peer_resolver = socket_in(p.peer, {"::", 53}, {.type = SOCK_DGRAM});
  }
};

// Where every Programs of this binary pins its links.
const std::string& pin_root() {
  static ambient::test::BpfFs fs;
  return fs.path();
}

std::shared_ptr<ebpf::Programs> programs() {
  static std::shared_ptr<ebpf::Programs> loaded = [] {
    auto p = ebpf::Programs::load("", pin_root());
    AMBIENT_REQUIRE_OK(p);
    return *p;
  }();
  return loaded;
}

const PodRedirectConfig kCfg{.dns_capture = true, .ipv6 = true};

// A pod whose client connects to `to`: which of `listeners` got it (index),
// -1 for none. The accepted connection, when any, must carry data both ways.
int landed(const TestNetns& from_ns, const Endpoint& to, const std::vector<int>& listeners,
           const std::optional<Endpoint>& from = std::nullopt, std::string* local = nullptr) {
  UniqueFd client = connect_from(from_ns, to, from);
  const bool ok = connected(client.get(), 1500ms);
  for (size_t i = 0; i < listeners.size(); ++i) {
    UniqueFd got = accept_within(listeners[i], ok ? 500ms : 50ms);
    if (!got.valid()) continue;
    if (local) *local = local_of(got.get());
    CHECK(round_trip(client.get(), got.get()));
    return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

TEST_CASE("eBPF backend: capture with real connections, IPv4 and IPv6", "[ebpf]") {
  const std::string setting = GENERATE(from_range(kPodSettings));
  INFO("pod netns: " << setting);
  Pair p;
  apply_setting(p.pod, setting);
  Sockets s(p);
  EbpfBackend backend(programs());
  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
  const std::vector<int> out_listeners = {s.outbound.get(), s.peer_server.get()};
  const std::vector<int> in_listeners = {s.inbound.get(), s.app.get()};
  std::string local;

  SECTION("outbound TCP lands on 15001 with the original destination as its address") {
    CHECK(landed(p.pod, {"10.99.0.1", 9090}, out_listeners, {}, &local) == 0);
    CHECK(local == "[::ffff:10.99.0.1]:9090");
    CHECK(landed(p.pod, {"fd99::1", 9090}, out_listeners, {}, &local) == 0);
    CHECK(local == "[fd99::1]:9090");
  }
  SECTION("inbound TCP lands on 15006; HBONE on 15008 directly") {
    CHECK(landed(p.peer, {"10.99.0.2", 8080}, in_listeners, {}, &local) == 0);
    CHECK(local == "[::ffff:10.99.0.2]:8080");
    CHECK(landed(p.peer, {"fd99::2", 8080}, in_listeners, {}, &local) == 0);
    CHECK(local == "[fd99::2]:8080");
    CHECK(landed(p.peer, {"10.99.0.2", 15008}, {s.hbone.get(), s.inbound.get()}) == 0);
  }
  SECTION("kubelet probes from the SNAT address reach the app directly") {
    CHECK(landed(p.peer, {"10.99.0.2", 8080}, in_listeners, Endpoint{"169.254.7.127", 0}) == 1);
  }
  SECTION("ztunnel's own connections (mark 1337) leave the pod") {
    UniqueFd z = connect_from(p.pod, {"10.99.0.1", 9090}, std::nullopt, {.mark = 1337});
    REQUIRE(connected(z.get()));
    UniqueFd got = accept_within(s.peer_server.get());
    REQUIRE(got.valid());
    CHECK(round_trip(z.get(), got.get()));
  }
  SECTION("ztunnel's spoofed connection to the app gets the app's replies") {
    for (auto [client, app] :
         {std::pair{"10.99.0.1", "10.99.0.2"}, std::pair{"fd99::1", "fd99::2"}}) {
      INFO(client);
      UniqueFd z = connect_from(p.pod, {app, 8080}, Endpoint{client, 0}, ztunnel_opts());
      REQUIRE(connected(z.get()));
      UniqueFd got = accept_within(s.app.get());
      REQUIRE(got.valid());
      CHECK_THAT(peer_of(got.get()), Catch::Contains(client));
      CHECK(round_trip(z.get(), got.get()));
    }
  }
  SECTION("no ztunnel listener: connections fail closed in both directions") {
    s.outbound.reset();
    s.inbound.reset();
    CHECK(landed(p.pod, {"10.99.0.1", 9090}, {s.peer_server.get()}) == -1);
    CHECK(landed(p.peer, {"10.99.0.2", 8080}, {s.app.get()}) == -1);
  }
  AMBIENT_REQUIRE_OK(backend.remove(p.pod.ns(), kCfg));
  CHECK(landed(p.pod, {"10.99.0.1", 9090}, {s.peer_server.get()}) == 0);
}

TEST_CASE("eBPF backend: DNS reaches ztunnel's proxy and the answer the app", "[ebpf]") {
  const std::string setting = GENERATE(from_range(kPodSettings));
  INFO("pod netns: " << setting);
  Pair p;
  apply_setting(p.pod, setting);
  Sockets s(p);
  EbpfBackend backend(programs());
  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));

  for (auto [resolver, proxy] :
       {std::pair{"10.99.0.1", &s.dns_udp4}, std::pair{"fd99::1", &s.dns_udp6}}) {
    for (bool connect_first : {false, true}) {
      INFO(resolver << (connect_first ? " connected" : " unconnected"));
      UniqueFd client =
          socket_in(p.pod, {is_v6(resolver) ? "::" : "0.0.0.0", 0}, {.type = SOCK_DGRAM});
      socklen_t len = 0;
      sockaddr_storage to = to_sockaddr({resolver, 53}, &len);
      if (connect_first)
        REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&to), len) == 0);
      REQUIRE(::sendto(client.get(), "q", 1, 0, reinterpret_cast<sockaddr*>(&to), len) == 1);
      REQUIRE(readable(proxy->get(), 1000ms));
      sockaddr_storage from{};
      socklen_t from_len = sizeof from;
      char buf[16];
      REQUIRE(::recvfrom(proxy->get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from),
                         &from_len) == 1);
      // The client as it is, as with REDIRECT: the pod's address, its port.
      const std::string client_port =
          local_of(client.get()).substr(local_of(client.get()).rfind(':'));
      CHECK(to_string(from) == (is_v6(resolver) ? "[fd99::2]" : "10.99.0.2") + client_port);
      REQUIRE(::sendto(proxy->get(), "a", 1, 0, reinterpret_cast<sockaddr*>(&from), from_len) == 1);
      REQUIRE(readable(client.get(), 1000ms));
      from_len = sizeof from;
      REQUIRE(::recvfrom(client.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from),
                         &from_len) == 1);
      CHECK_THAT(to_string(from), Catch::Contains(std::string(resolver)) && Catch::EndsWith(":53"));
    }
  }
  for (auto [resolver, proxy] :
       {std::pair{"10.99.0.1", &s.dns_tcp4}, std::pair{"fd99::1", &s.dns_tcp6}}) {
    INFO(resolver << " tcp");
    UniqueFd client = connect_from(p.pod, {resolver, 53});
    REQUIRE(connected(client.get()));
    UniqueFd got = accept_within(proxy->get());
    REQUIRE(got.valid());
    CHECK(round_trip(client.get(), got.get()));
    CHECK_THAT(peer_of(client.get()),
               Catch::EndsWith(":53") && Catch::Contains(std::string(resolver)));
  }
  CHECK_FALSE(readable(s.peer_resolver.get(), 0ms));  // nothing bypassed
}

TEST_CASE("eBPF backend: connections from before enrollment keep working", "[ebpf]") {
  Pair p;
  Sockets s(p);
  UniqueFd out_client = connect_from(p.pod, {"10.99.0.1", 9090});
  REQUIRE(connected(out_client.get()));
  UniqueFd out_served = accept_within(s.peer_server.get());
  UniqueFd in_client = connect_from(p.peer, {"fd99::2", 8080});
  REQUIRE(connected(in_client.get()));
  UniqueFd in_served = accept_within(s.app.get());
  REQUIRE((out_served.valid() && in_served.valid()));
  EbpfBackend backend(programs());
  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
  CHECK(round_trip(out_client.get(), out_served.get()));
  CHECK(round_trip(in_client.get(), in_served.get()));
}

TEST_CASE("eBPF backend: install, verify, idempotency, ingress mode, removal", "[ebpf]") {
  Pair p;
  EbpfBackend backend(programs());
  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
  auto v = backend.verify(p.pod.ns(), kCfg);
  AMBIENT_REQUIRE_OK(v);
  INFO((v->problems.empty() ? std::string() : v->problems.front()));
  CHECK(v->complete);
  CHECK(p.pod.exec({"sysctl", "-n", "net.ipv4.conf.lo.accept_local"}) == "1\n");
  CHECK(p.pod.exec({"sysctl", "-n", "net.ipv4.conf.lo.route_localnet"}) == "1\n");
  CHECK_THAT(p.pod.exec({"ip", "rule"}), Catch::Contains("fwmark 0x111/0xfff lookup 100"));
  const std::string filters = p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"});
  CHECK_THAT(filters, Catch::Contains("amb_egress") && Catch::Contains("handle 0x539"));

  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));  // nothing to do
  CHECK(p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"}) == filters);

  SECTION("a filter deleted behind our back is found and put back") {
    p.pod.exec(
        {"tc", "filter", "del", "dev", "eth0", "ingress", "pref", "1", "handle", "0x539", "bpf"});
    v = backend.verify(p.pod.ns(), kCfg);
    REQUIRE(v);
    CHECK_FALSE(v->complete);
    CHECK_THAT(v->problems.front(), Catch::Contains("eth0 ingress"));
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
    CHECK(backend.verify(p.pod.ns(), kCfg)->complete);
  }
  SECTION("lo's settings changed behind our back are found and set again") {
    p.pod.exec({"sysctl", "-qw", "net.ipv4.conf.lo.accept_local=0"});
    v = backend.verify(p.pod.ns(), kCfg);
    REQUIRE(v);
    CHECK_FALSE(v->complete);
    REQUIRE(v->problems.size() == 1);
    CHECK(v->problems.front() == "net.ipv4.conf.lo.accept_local is 0, want 1");
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
    CHECK(backend.verify(p.pod.ns(), kCfg)->complete);
    CHECK(p.pod.exec({"sysctl", "-n", "net.ipv4.conf.lo.accept_local"}) == "1\n");
    CHECK(p.pod.exec({"sysctl", "-n", "net.ipv4.conf.lo.route_localnet"}) == "1\n");
  }
  SECTION("ingress mode has no inbound filter; DNS off resets route_localnet") {
    const PodRedirectConfig ingress{.ipv6 = true, .ingress_mode = true};
    CHECK_FALSE(backend.verify(p.pod.ns(), ingress)->complete);
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), ingress));
    CHECK(backend.verify(p.pod.ns(), ingress)->complete);
    CHECK(p.pod.exec({"tc", "filter", "show", "dev", "eth0", "ingress"}).find("amb_") ==
          std::string::npos);
    CHECK(p.pod.exec({"sysctl", "-n", "net.ipv4.conf.lo.route_localnet"}) == "0\n");
  }
  SECTION("someone else's filter and qdisc stay") {
    p.pod.exec({"tc", "filter", "add", "dev", "eth0", "egress", "pref", "7", "u32", "match", "u32",
                "0", "0"});
    AMBIENT_REQUIRE_OK(backend.remove(p.pod.ns(), kCfg));
    const std::string left = p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"});
    CHECK_THAT(left, Catch::Contains("u32"));
    CHECK(left.find("amb_") == std::string::npos);
  }
  AMBIENT_REQUIRE_OK(backend.remove(p.pod.ns(), kCfg));
  CHECK_FALSE(backend.verify(p.pod.ns(), kCfg)->complete);
  for (const char* dev : {"eth0", "lo"}) {
    for (const char* hook : {"ingress", "egress"}) {
      CHECK(p.pod.exec({"tc", "filter", "show", "dev", dev, hook}).find("amb_") ==
            std::string::npos);
    }
  }
  CHECK(p.pod.exec({"ip", "rule"}).find("0x111") == std::string::npos);
  CHECK(p.pod.exec({"sysctl", "-n", "net.ipv4.conf.lo.accept_local"}) == "0\n");
  AMBIENT_REQUIRE_OK(backend.remove(p.pod.ns(), kCfg));  // idempotent
}

TEST_CASE("eBPF backend: a clsact qdisc made by someone else first is used and kept", "[ebpf]") {
  Pair p;
  EbpfBackend backend(programs());
  p.pod.exec({"tc", "qdisc", "add", "dev", "eth0", "clsact"});
  p.pod.exec({"tc", "filter", "add", "dev", "eth0", "ingress", "pref", "7", "u32", "match", "u32",
              "0", "0"});
  CHECK_FALSE(backend.verify(p.pod.ns(), kCfg)->complete);
  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
  auto v = backend.verify(p.pod.ns(), kCfg);
  AMBIENT_REQUIRE_OK(v);
  INFO((v->problems.empty() ? std::string() : v->problems.front()));
  CHECK(v->complete);
  const std::string ingress = p.pod.exec({"tc", "filter", "show", "dev", "eth0", "ingress"});
  CHECK_THAT(ingress, Catch::Contains("amb_ingress") && Catch::Contains("u32"));
  AMBIENT_REQUIRE_OK(backend.remove(p.pod.ns(), kCfg));
  const std::string left = p.pod.exec({"tc", "filter", "show", "dev", "eth0", "ingress"});
  CHECK_THAT(left, Catch::Contains("u32"));
  CHECK(left.find("amb_") == std::string::npos);
  CHECK_THAT(p.pod.exec({"tc", "qdisc", "show", "dev", "eth0"}), Catch::Contains("clsact"));
}

// docs/redirection.md#ebpf-time-wait. ztunnel closes first, so its side of
// the connection waits in TIME_WAIT with the original tuple; the client
// comes back from the same port, three times in a row. A plain lookup would
// give that SYN to the app's listener (inbound) or reset it (outbound), and
// an assign is dropped beside the TIME_WAIT: tc records ztunnel's listener
// for the tuple and amb_tw_lookup hands it over. The agent that attached
// it may be gone meanwhile: the pinned link goes on.
TEST_CASE("eBPF backend: a reused tuple meeting ztunnel's TIME_WAIT reaches ztunnel, agent or not",
          "[ebpf]") {
  const bool agent_gone = GENERATE(false, true);
  INFO((agent_gone ? "the installing Programs destroyed before the reuse" : "agent running"));
  Pair p;
  Sockets s(p);
  {
    auto own = ebpf::Programs::load("tw-" + ambient::test::random_hex(8), pin_root());
    AMBIENT_REQUIRE_OK(own);
    std::shared_ptr<ebpf::Programs> installer = agent_gone ? *own : programs();
    EbpfBackend backend(installer);
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
    CHECK(std::filesystem::exists(ebpf::tw_link_path(installer->link_dir(), p.pod.ns().inode())));
  }
  // The counters of whichever agent installed the programs.
  const auto counters = [&] {
    auto id = in_netns(p.pod, [] {
      return ebpf::attached_program({.ifindex = 1, .name = "lo", .loopback = true},
                                    ebpf::Hook::Ingress);
    });
    AMBIENT_REQUIRE_OK(id);
    auto c = ebpf::counters_of_program(*id);
    AMBIENT_REQUIRE_OK(c);
    return *c;
  };
  struct Case {
    const TestNetns* from_ns;
    Endpoint from, to;
    int ztunnel, bypass;
  };
  for (const Case& c :
       {Case{&p.peer, {"10.99.0.1", 45123}, {"10.99.0.2", 8080}, s.inbound.get(), s.app.get()},
        Case{&p.pod,
             {"10.99.0.2", 45124},
             {"10.99.0.1", 9090},
             s.outbound.get(),
             s.peer_server.get()}}) {
    INFO(c.from.ip << " -> " << c.to.ip);
    for (int round = 0; round < 4; ++round) {
      INFO("connection " << round << " from the same port");
      const ebpf::Counters before = counters();
      UniqueFd client = connect_from(*c.from_ns, c.to, c.from);
      REQUIRE(connected(client.get(), 1500ms));
      CHECK_FALSE(accept_within(c.bypass, 0ms).valid());
      UniqueFd served = accept_within(c.ztunnel);
      REQUIRE(served.valid());
      CHECK(round_trip(client.get(), served.get()));
      served.reset();  // ztunnel's side closes first: its TIME_WAIT
      REQUIRE(readable(client.get(), 1000ms));
      client.reset();
      if (round == 0) continue;  // no TIME_WAIT before the first
      const ebpf::Counters after = counters();
      CHECK(after[AMB_CNT_TIME_WAIT] == before[AMB_CNT_TIME_WAIT] + 1);
      CHECK(after[AMB_CNT_TW_HANDOFF] == before[AMB_CNT_TW_HANDOFF] + 1);
      CHECK(after[AMB_CNT_DROP_TIME_WAIT] == before[AMB_CNT_DROP_TIME_WAIT]);
    }
  }
}

// docs/redirection.md#ebpf-fallback: ztunnel's outbound listener without
// IP_TRANSPARENT cannot take eBPF's IPv4 hand-over; once ztunnel is ready
// the pod moves to the rules, which capture it, and stays there through
// installs and verifies until removed. A transparent listener keeps eBPF.
TEST_CASE("eBPF backend: a pod whose ztunnel listener is not transparent moves to the rules",
          "[ebpf]") {
  const bool transparent = GENERATE(true, false);
  INFO("ztunnel's 15001 listener " << (transparent ? "transparent" : "not transparent"));
  Pair p;
  UniqueFd outbound = socket_in(p.pod, {"::", 15001}, ztunnel_opts(SOCK_STREAM, transparent));
  UniqueFd peer_server = socket_in(p.peer, {"::", 9090});
  EbpfBackend backend(programs(), std::make_shared<NftablesBackend>());
  const PodRedirectConfig cfg{.ipv6 = true};
  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), cfg));
  auto suits = backend.ztunnel_ready(p.pod.ns(), cfg);
  AMBIENT_REQUIRE_OK(suits);
  CHECK(*suits == transparent);  // only then may later pods skip the check
  const std::string marker = ebpf::rules_marker_path(programs()->link_dir(), p.pod.ns().inode());
  CHECK(backend.on_rules(p.pod.ns()) == !transparent);
  CHECK(std::filesystem::exists(marker) == !transparent);
  const std::string filters = p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"});
  const std::string rules = p.pod.exec({"nft", "list", "ruleset"});
  CHECK((filters.find("amb_egress") != std::string::npos) == transparent);
  CHECK((rules.find("istio") != std::string::npos) == !transparent);
  // Either way the pod's IPv4 outbound reaches ztunnel, and nothing else.
  CHECK(landed(p.pod, {"10.99.0.1", 9090}, {outbound.get(), peer_server.get()}) == 0);
  // An install (a restart's, a repair's) keeps the pod where it is.
  AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), cfg));
  auto v = backend.verify(p.pod.ns(), cfg);
  AMBIENT_REQUIRE_OK(v);
  CHECK(v->complete);
  CHECK(p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"}) == filters);
  CHECK(ebpf::count_rules_markers(programs()->link_dir()) >= (transparent ? 0u : 1u));
  AMBIENT_REQUIRE_OK(backend.remove(p.pod.ns(), cfg));
  CHECK_FALSE(std::filesystem::exists(marker));
  CHECK(p.pod.exec({"nft", "list", "ruleset"}).find("istio") == std::string::npos);
  CHECK(p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"}).find("amb_") ==
        std::string::npos);
  CHECK(p.pod.exec({"ip", "rule"}).find("0x111") == std::string::npos);
}

// The link is part of the pod's state: verify misses it, install puts it
// back, remove unpins it, and a link whose netns is gone is swept.
TEST_CASE("eBPF backend: the pod's pinned sk_lookup link is verified, repaired, removed, swept",
          "[ebpf]") {
  EbpfBackend backend(programs());
  const std::string& dir = programs()->link_dir();
  std::string path;
  {
    Pair p;
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
    path = ebpf::tw_link_path(dir, p.pod.ns().inode());
    REQUIRE(std::filesystem::exists(path));
    REQUIRE(std::filesystem::remove(path));
    auto v = backend.verify(p.pod.ns(), kCfg);
    AMBIENT_REQUIRE_OK(v);
    CHECK_FALSE(v->complete);
    CHECK(std::any_of(v->problems.begin(), v->problems.end(), [](const std::string& problem) {
      return problem.find("no amb_tw_lookup link pinned") != std::string::npos;
    }));
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
    CHECK(std::filesystem::exists(path));
    CHECK(backend.verify(p.pod.ns(), kCfg)->complete);
    AMBIENT_REQUIRE_OK(backend.remove(p.pod.ns(), kCfg));
    CHECK_FALSE(std::filesystem::exists(path));
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
    REQUIRE(std::filesystem::exists(path));
    AMBIENT_REQUIRE_OK(ebpf::sweep_defunct_tw_links(dir));
    CHECK(std::filesystem::exists(path));  // a live pod's link stays
  }  // the pod's netns goes (the kernel takes it down in the background)
  CHECK(ambient::test::eventually(
      [&] {
        AMBIENT_REQUIRE_OK(ebpf::sweep_defunct_tw_links(dir));
        return !std::filesystem::exists(path);
      },
      10s));
}

// Numbers, not a gate: printed for docs/ and the report. Both backends in
// the same run, on the same kind of fresh pod.
TEST_CASE("eBPF backend: per-pod install time next to nftables", "[ebpf][timing]") {
  constexpr int kPods = 30;
  EbpfBackend ebpf_backend(programs());
  NftablesBackend nft_backend;
  // The first pod of a configuration loads its programs: not per pod.
  const auto load_start = std::chrono::steady_clock::now();
  AMBIENT_REQUIRE_OK(programs()->get(*ebpf::variant_for(kCfg)));
  std::cout << "eBPF programs, one variant loaded (or found loaded): "
            << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                         load_start)
                   .count()
            << " ms\n";
  std::map<std::string, std::vector<double>> ms;
  for (int i = 0; i < kPods; ++i) {
    for (RedirectBackend* b : {static_cast<RedirectBackend*>(&ebpf_backend),
                               static_cast<RedirectBackend*>(&nft_backend)}) {
      Pair p;
      const auto start = std::chrono::steady_clock::now();
      AMBIENT_REQUIRE_OK(b->install(p.pod.ns(), kCfg));
      ms[std::string(b->name())].push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
  }
  for (auto& [name, v] : ms) {
    std::sort(v.begin(), v.end());
    std::cout << name << " install per pod (" << kPods << " pods, eth0 + lo, IPv4+IPv6, DNS): p50 "
              << v[v.size() / 2] << " ms, p90 " << v[v.size() * 9 / 10] << " ms, min " << v.front()
              << " ms, max " << v.back() << " ms\n";
  }
  CHECK(ms["ebpf"][kPods / 2] < ms["nftables"][kPods / 2]);
}

// docs/redirection.md#ebpf-loading: a restarted agent (a new Programs with
// the same owner) leaves an earlier process's identical programs in place
// and keeps counting in its maps; another owner's programs, or another
// configuration's, are replaced.
TEST_CASE("eBPF backend: a new agent process adopts its predecessor's programs, not another's",
          "[ebpf]") {
  const std::string owner = "node-" + ambient::test::random_hex(8) + "|/run";
  auto first = ebpf::Programs::load(owner, pin_root());
  AMBIENT_REQUIRE_OK(first);
  Pair p;
  EbpfBackend earlier(*first);
  AMBIENT_REQUIRE_OK(earlier.install(p.pod.ns(), kCfg));
  const std::string filters = p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"});

  SECTION("the same owner: adopted, counters go on in the same map") {
    auto second = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(second);
    EbpfBackend later(*second);
    auto v = later.verify(p.pod.ns(), kCfg);
    AMBIENT_REQUIRE_OK(v);
    INFO((v->problems.empty() ? std::string() : v->problems.front()));
    CHECK(v->complete);
    AMBIENT_REQUIRE_OK(later.install(p.pod.ns(), kCfg));
    CHECK(p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"}) == filters);
    // One map: what the earlier programs count, the new process reads.
    Sockets s(p);
    const auto before = *(*second)->counters();
    UniqueFd c = connect_from(p.pod, {"10.99.0.1", 9090});
    CHECK(connected(c.get()));
    CHECK((*(*second)->counters())[AMB_CNT_OUTBOUND] > before[AMB_CNT_OUTBOUND]);
    CHECK(*(*second)->counters() == *(*first)->counters());
  }
  SECTION("another owner (another node on the same kernel): replaced") {
    auto other = ebpf::Programs::load(owner + "-other", pin_root());
    AMBIENT_REQUIRE_OK(other);
    EbpfBackend later(*other);
    auto v = later.verify(p.pod.ns(), kCfg);
    AMBIENT_REQUIRE_OK(v);
    CHECK_FALSE(v->complete);
    AMBIENT_REQUIRE_OK(later.install(p.pod.ns(), kCfg));
    CHECK(later.verify(p.pod.ns(), kCfg)->complete);
    CHECK(p.pod.exec({"tc", "filter", "show", "dev", "eth0", "egress"}) != filters);
  }
  SECTION("the same owner, another configuration: replaced") {
    auto second = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(second);
    EbpfBackend later(*second);
    PodRedirectConfig no_dns = kCfg;
    no_dns.dns_capture = !kCfg.dns_capture;
    CHECK_FALSE(later.verify(p.pod.ns(), no_dns)->complete);
  }
}

namespace {

// The instance pin directories in `link_dir` (prog-<object>-<config>).
std::vector<std::string> pin_dirs(const std::string& link_dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(link_dir)) return out;
  for (const auto& e : std::filesystem::directory_iterator(link_dir)) {
    const std::string name = e.path().filename();
    if (name.rfind("prog-", 0) == 0) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::array<uint32_t, std::size(ebpf::kPrograms)> ids_of(ebpf::Programs& programs,
                                                        const PodRedirectConfig& cfg) {
  auto set = programs.get(*ebpf::variant_for(cfg));
  REQUIRE(set);
  std::array<uint32_t, std::size(ebpf::kPrograms)> out{};
  for (ebpf::Program p : ebpf::kPrograms) out[static_cast<size_t>(p)] = (*set)->get(p).id;
  return out;
}

}  // namespace

// docs/redirection.md#ebpf-loading: an agent restarted in the same boot
// takes the instances its predecessor pinned, without loading; what is
// not provably identical is loaded afresh and pinned over.
TEST_CASE("eBPF programs: a restarted agent of this build adopts the pinned instances unloaded",
          "[ebpf]") {
  const std::string owner = "node-" + ambient::test::random_hex(8) + "|/run";
  const PodRedirectConfig defaults{};
  auto first = ebpf::Programs::load(owner, pin_root());
  AMBIENT_REQUIRE_OK(first);
  CHECK_FALSE((*first)->first_adopted());
  const auto first_ids = ids_of(**first, defaults);
  const std::string link_dir = (*first)->link_dir();
  REQUIRE(pin_dirs(link_dir).size() == 1);
  CHECK(std::distance(std::filesystem::directory_iterator(pin_dirs(link_dir)[0]),
                      std::filesystem::directory_iterator()) == std::size(ebpf::kPrograms));

  SECTION("the same programs and maps, alive after the process that loaded them") {
    first->reset();  // the pins alone hold them now
    auto second = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(second);
    CHECK((*second)->first_adopted());
    CHECK(ids_of(**second, defaults) == first_ids);
    // A variant loaded by this process is pinned and adopted by the next,
    // over the same shared maps.
    const auto dns_ids = ids_of(**second, kCfg);
    CHECK(pin_dirs(link_dir).size() == 2);
    auto third = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(third);
    CHECK(ids_of(**third, kCfg) == dns_ids);
    CHECK(*(*third)->counters() == *(*second)->counters());
    Pair p;
    EbpfBackend backend(*third);
    AMBIENT_REQUIRE_OK(backend.install(p.pod.ns(), kCfg));
    Sockets s(p);
    const auto before = *(*second)->counters();
    UniqueFd c = connect_from(p.pod, {"10.99.0.1", 9090});
    CHECK(connected(c.get()));
    CHECK((*(*second)->counters())[AMB_CNT_OUTBOUND] > before[AMB_CNT_OUTBOUND]);
  }
  SECTION("a pinned program that is not this configuration's is not adopted, and is re-pinned") {
    auto other = ebpf::Programs::load(owner + "-other", pin_root());
    AMBIENT_REQUIRE_OK(other);
    const uint32_t impostor = ids_of(**other, defaults)[0];
    const std::string path =
        pin_dirs(link_dir)[0] + "/" + std::string(ebpf::program_name(ebpf::kPrograms[0]));
    REQUIRE(::unlink(path.c_str()) == 0);
    auto set = (*other)->get(*ebpf::variant_for(defaults));
    REQUIRE(set);
    REQUIRE(bpf_obj_pin((*set)->get(ebpf::kPrograms[0]).fd, path.c_str()) == 0);
    auto second = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(second);
    CHECK_FALSE((*second)->first_adopted());
    const auto second_ids = ids_of(**second, defaults);
    CHECK(second_ids != first_ids);
    CHECK(second_ids[0] != impostor);
    auto third = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(third);
    CHECK((*third)->first_adopted());
    CHECK(ids_of(**third, defaults) == second_ids);
  }
  SECTION("another build's pins are removed; unpin removes this build's") {
    const std::string stale = link_dir + "/prog-0000000000000001-0000000000000002";
    std::filesystem::create_directory(stale);
    auto set = (*first)->get(*ebpf::variant_for(defaults));
    REQUIRE(set);
    REQUIRE(bpf_obj_pin((*set)->get(ebpf::Program::Egress).fd, (stale + "/amb_egress").c_str()) ==
            0);
    auto second = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(second);
    CHECK((*second)->first_adopted());
    CHECK_FALSE(std::filesystem::exists(stale));
    auto unpinned = (*second)->unpin();
    AMBIENT_REQUIRE_OK(unpinned);
    CHECK(*unpinned == 1);
    CHECK(pin_dirs(link_dir).empty());
    auto third = ebpf::Programs::load(owner, pin_root());
    AMBIENT_REQUIRE_OK(third);
    CHECK_FALSE((*third)->first_adopted());
    (void)(*third)->unpin();
  }
}
