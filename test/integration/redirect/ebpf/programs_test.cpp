// Every decision of the in-pod eBPF programs on crafted packets, through
// BPF_PROG_TEST_RUN. The run happens on a thread inside a test netns, so
// the programs' socket lookups find the sockets the test made there:
// ztunnel's (marked, transparent, reuseport), an app's, impostors.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include <catch2/catch.hpp>

#include "integration/redirect/ebpf/packets.h"
#include "integration/redirect/ebpf/sockets.h"
#include "redirect/ebpf/programs.h"
#include "support/test_netns.h"

using namespace ambient;
using namespace ambient::redirect;
using namespace ambient::redirect::ebpf;
using namespace ambient::test::ebpf;
using ambient::test::TestNetns;

namespace {

struct Run {
  int verdict = 0;
  uint32_t mark = 0;
  std::vector<uint8_t> out;
};

// One test run of `prog` in `ns` with `mark` on the packet.
Run run(const TestNetns& ns, LoadedProgram prog, const std::vector<uint8_t>& pkt,
        uint32_t mark = 0) {
  Run r;
  auto done = in_netns(ns, [&]() -> Result<> {
    __sk_buff ctx{};
    ctx.mark = mark;
    __sk_buff ctx_out{};
    r.out.resize(pkt.size() + 64);
    bpf_test_run_opts opts{};
    opts.sz = sizeof opts;
    opts.data_in = pkt.data();
    opts.data_out = r.out.data();
    opts.data_size_in = static_cast<uint32_t>(pkt.size());
    opts.data_size_out = static_cast<uint32_t>(r.out.size());
    opts.ctx_in = &ctx;
    opts.ctx_out = &ctx_out;
    opts.ctx_size_in = sizeof ctx;
    opts.ctx_size_out = sizeof ctx_out;
    if (int e = bpf_prog_test_run_opts(prog.fd, &opts); e != 0) return sys_error("test run", -e);
    r.verdict = static_cast<int>(opts.retval);
    r.mark = ctx_out.mark;
    r.out.resize(opts.data_size_out);
    return {};
  });
  AMBIENT_REQUIRE_OK(done);
  return r;
}

// A pod netns with its addresses on one end of a veth whose other end is
// down (what the pod sends there goes nowhere), ztunnel's listeners and an
// app listener on 8080; the loaded programs.
struct Pod {
  TestNetns ns;
  std::shared_ptr<Programs> programs;
  UniqueFd outbound, inbound, hbone, app, dns_udp4, dns_tcp4, dns_udp6, dns_tcp6;

  Pod() {
    ns.exec({"ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"});
    ns.exec({"ip", "link", "set", "d0", "up"});
    ns.exec({"ip", "addr", "add", "10.99.0.2/24", "dev", "d0"});
    ns.exec({"ip", "addr", "add", "fd99::2/64", "dev", "d0", "nodad"});
    outbound = socket_in(ns, {"::", 15001}, ztunnel_opts());
    inbound = socket_in(ns, {"::", 15006}, ztunnel_opts());
    hbone = socket_in(ns, {"::", 15008}, ztunnel_opts());
    app = socket_in(ns, {"::", 8080});
    dns_udp4 = socket_in(ns, {"127.0.0.1", 15053}, ztunnel_opts(SOCK_DGRAM, false));
    dns_tcp4 = socket_in(ns, {"127.0.0.1", 15053}, ztunnel_opts(SOCK_STREAM, false));
    dns_udp6 = socket_in(ns, {"::1", 15053}, ztunnel_opts(SOCK_DGRAM, false));
    dns_tcp6 = socket_in(ns, {"::1", 15053}, ztunnel_opts(SOCK_STREAM, false));
    auto loaded = Programs::load();
    AMBIENT_REQUIRE_OK(loaded);
    programs = *loaded;
  }

  LoadedProgram prog(Program p,
                     const PodRedirectConfig& cfg = {.dns_capture = true, .ipv6 = true}) {
    auto v = variant_for(cfg);
    AMBIENT_REQUIRE_OK(v);
    auto set = programs->get(*v);
    AMBIENT_REQUIRE_OK(set);
    return (*set)->get(p);
  }

  // A query from port 5353 as amb_egress rewrote it (the resolver is
  // remembered for the reply).
  std::vector<uint8_t> dns_query_out(const std::string& src, const std::string& dst, int proto) {
    return run(ns, prog(Program::Egress),
               build_packet({.src = src,
                             .dst = dst,
                             .sport = 5353,
                             .dport = 53,
                             .proto = proto,
                             .payload = "q"}))
        .out;
  }

  Counters counters() {
    auto c = programs->counters();
    AMBIENT_REQUIRE_OK(c);
    return *c;
  }
};

// How much each counter grew while `fn` ran.
template <class F>
Counters delta(Pod& pod, F fn) {
  const Counters before = pod.counters();
  fn();
  Counters after = pod.counters();
  for (size_t i = 0; i < after.size(); ++i) after[i] -= before[i];
  return after;
}

// bpf_sk_assign works only on a packet really at tc ingress, which a
// test run is not: the helper refuses, after the program chose a listener
// that passed every check. A listener that failed one gives another
// counter.
constexpr amb_counter kAssignedInTestRun = AMB_CNT_DROP_ASSIGN;

}  // namespace

TEST_CASE("eBPF egress: what leaves the pod", "[ebpf]") {
  Pod pod;
  const LoadedProgram egress = pod.prog(Program::Egress);
  const auto syn4 = build_packet({.src = "10.99.0.2", .dst = "10.99.0.1", .dport = 9090});

  SECTION("ztunnel's own packets pass untouched") {
    auto r = run(pod.ns, egress, syn4, 0x10000539);
    CHECK(r.verdict == TC_ACT_UNSPEC);
    CHECK(r.mark == 0x10000539u);
    CHECK(r.out == syn4);
  }
  SECTION("a looped packet must never leave: dropped") {
    auto d =
        delta(pod, [&] { CHECK(run(pod.ns, egress, syn4, kInpodMark).verdict == TC_ACT_SHOT); });
    CHECK(d[AMB_CNT_DROP_LOOP] == 1);
  }
  SECTION("a new connection goes to lo with the in-pod mark, other mark bits kept") {
    auto r = run(pod.ns, egress, syn4, 0xa0000000);
    CHECK(r.verdict == TC_ACT_REDIRECT);
    CHECK(r.mark == 0xa0000111u);
    CHECK(read_packet(r.out).dst_mac == std::vector<uint8_t>(6, 0));
    CHECK(read_packet(r.out).dst == "10.99.0.1");  // the address is not rewritten
  }
  SECTION("IPv6 too, and not when IPv6 is off") {
    const auto syn6 = build_packet({.src = "fd99::2", .dst = "fd99::1", .dport = 9090});
    CHECK(run(pod.ns, egress, syn6).verdict == TC_ACT_REDIRECT);
    CHECK(run(pod.ns, pod.prog(Program::Egress, {}), syn6).verdict == TC_ACT_UNSPEC);
  }
  SECTION("a segment of a flow from before enrollment passes") {
    auto ack =
        build_packet({.src = "10.99.0.2", .dst = "10.99.0.1", .dport = 9090, .tcp_flags = kAck});
    CHECK(run(pod.ns, egress, ack).verdict == TC_ACT_UNSPEC);
  }
  SECTION("connections to the probe SNAT address are not captured") {
    auto syn = build_packet({.src = "10.99.0.2", .dst = "169.254.7.127", .dport = 9090});
    CHECK(run(pod.ns, egress, syn).verdict == TC_ACT_UNSPEC);
  }
  SECTION("the app's reply on ztunnel's spoofed connection goes back to ztunnel") {
    // ztunnel connects to the app from the client's address (transparent,
    // marked); the app's SYN-ACK is owned by ztunnel's local socket.
    UniqueFd spoofed =
        connect_from(pod.ns, {"10.99.0.2", 8080}, Endpoint{"10.99.0.1", 41000}, ztunnel_opts());
    auto synack = build_packet({.src = "10.99.0.2",
                                .dst = "10.99.0.1",
                                .sport = 8080,
                                .dport = 41000,
                                .tcp_flags = kSyn | kAck});
    auto d = delta(pod, [&] { CHECK(run(pod.ns, egress, synack).verdict == TC_ACT_REDIRECT); });
    CHECK(d[AMB_CNT_LOOPED] == 1);
  }
}

TEST_CASE("eBPF egress: DNS is rewritten to ztunnel's loopback proxy", "[ebpf]") {
  Pod pod;
  const LoadedProgram egress = pod.prog(Program::Egress);
  auto query = [](const std::string& src, const std::string& dst, int proto, uint8_t flags = kSyn) {
    return build_packet({.src = src,
                         .dst = dst,
                         .sport = 5353,
                         .dport = 53,
                         .proto = proto,
                         .tcp_flags = flags,
                         .payload = "\x12\x34query"});
  };
  SECTION("UDP and TCP, IPv4 and IPv6, with valid checksums") {
    struct Case {
      std::string src, dst, loopback;
    };
    for (const Case& c :
         {Case{"10.99.0.2", "10.99.0.1", "127.0.0.1"}, Case{"fd99::2", "fd99::1", "::1"}}) {
      for (int proto : {IPPROTO_UDP, IPPROTO_TCP}) {
        INFO(c.src << " proto " << proto);
        auto d = delta(pod, [&] {
          auto r = run(pod.ns, egress, query(c.src, c.dst, proto));
          CHECK(r.verdict == TC_ACT_REDIRECT);
          CHECK(r.mark == kInpodMark);
          const Seen s = read_packet(r.out);
          CHECK(s.dst == c.loopback);
          CHECK(s.dport == 15053);
          CHECK(s.src == c.src);
          CHECK(s.sport == 5353);
          CHECK(s.ip_checksum_ok);
          CHECK(s.l4_checksum_ok);
        });
        CHECK(d[AMB_CNT_DNS_QUERY] == 1);
      }
    }
  }
  SECTION("an IPv4 UDP query without checksum keeps none") {
    auto p = build_packet({.src = "10.99.0.2",
                           .dst = "10.99.0.1",
                           .sport = 5353,
                           .dport = 53,
                           .proto = IPPROTO_UDP,
                           .udp_no_checksum = true,
                           .payload = "q"});
    const Seen s = read_packet(run(pod.ns, egress, p).out);
    CHECK(s.dport == 15053);
    CHECK(s.l4_checksum == 0);
  }
  SECTION("later TCP segments follow only a flow rewritten from its SYN") {
    auto ack = query("10.99.0.2", "10.99.0.1", IPPROTO_TCP, kAck);
    CHECK(run(pod.ns, egress, ack).verdict == TC_ACT_UNSPEC);  // no SYN seen: an older flow
    run(pod.ns, egress, query("10.99.0.2", "10.99.0.1", IPPROTO_TCP));
    auto r = run(pod.ns, egress, ack);
    CHECK(r.verdict == TC_ACT_REDIRECT);
    CHECK(read_packet(r.out).dport == 15053);
    // Another resolver on the same client port is not that flow.
    auto other = query("10.99.0.2", "10.99.0.9", IPPROTO_TCP, kAck);
    CHECK(run(pod.ns, egress, other).verdict == TC_ACT_UNSPEC);
  }
  SECTION("with DNS capture off, DNS is ordinary traffic") {
    const LoadedProgram plain = pod.prog(Program::Egress, {.ipv6 = true});
    CHECK(run(pod.ns, plain, query("10.99.0.2", "10.99.0.1", IPPROTO_UDP)).verdict ==
          TC_ACT_UNSPEC);
    CHECK(run(pod.ns, plain, query("10.99.0.2", "10.99.0.1", IPPROTO_TCP)).verdict ==
          TC_ACT_REDIRECT);  // a TCP SYN like any other, to 15001
  }
  SECTION("ztunnel's own DNS queries pass") {
    CHECK(run(pod.ns, egress, query("10.99.0.2", "10.99.0.1", IPPROTO_UDP), kZtunnelMark).verdict ==
          TC_ACT_UNSPEC);
  }
}

TEST_CASE("eBPF lo ingress: looped connections reach ztunnel or nothing", "[ebpf]") {
  Pod pod;
  const LoadedProgram lo = pod.prog(Program::LoIngress);
  const auto syn4 = build_packet({.src = "10.99.0.2", .dst = "10.99.0.1", .dport = 9090});
  const auto syn6 = build_packet({.src = "fd99::2", .dst = "fd99::1", .dport = 9090});

  SECTION("unmarked traffic on lo (the app talking to itself) passes") {
    CHECK(run(pod.ns, lo, syn4).verdict == TC_ACT_UNSPEC);
  }
  SECTION("a looped SYN is handed to ztunnel's 15001 listener, IPv4 and IPv6") {
    for (const auto& syn : {syn4, syn6}) {
      auto d = delta(pod, [&] { CHECK(run(pod.ns, lo, syn, kInpodMark).verdict == TC_ACT_SHOT); });
      CHECK(d[kAssignedInTestRun] == 1);
      CHECK(d[AMB_CNT_DROP_NO_PROXY] == 0);
    }
  }
  SECTION("no ztunnel listener: dropped, never delivered") {
    pod.outbound.reset();
    auto d = delta(pod, [&] { CHECK(run(pod.ns, lo, syn4, kInpodMark).verdict == TC_ACT_SHOT); });
    CHECK(d[AMB_CNT_DROP_NO_PROXY] == 1);
  }
  SECTION("a listener on 15001 without ztunnel's mark is not ztunnel") {
    pod.outbound.reset();
    UniqueFd impostor = socket_in(pod.ns, {"::", 15001});
    auto d = delta(pod, [&] { CHECK(run(pod.ns, lo, syn4, kInpodMark).verdict == TC_ACT_SHOT); });
    CHECK(d[AMB_CNT_DROP_NO_PROXY] == 1);
  }
  SECTION("IPv4 needs a transparent listener; IPv6 does not") {
    pod.outbound.reset();
    UniqueFd plain = socket_in(pod.ns, {"::", 15001}, ztunnel_opts(SOCK_STREAM, false));
    auto d = delta(pod, [&] { run(pod.ns, lo, syn4, kInpodMark); });
    CHECK(d[AMB_CNT_DROP_NONTRANSPARENT] == 1);
    d = delta(pod, [&] { run(pod.ns, lo, syn6, kInpodMark); });
    CHECK(d[kAssignedInTestRun] == 1);
  }
  SECTION("a looped segment without a SYN and without an owner is left to the kernel") {
    auto ack =
        build_packet({.src = "10.99.0.2", .dst = "10.99.0.1", .dport = 9090, .tcp_flags = kAck});
    CHECK(run(pod.ns, lo, ack, kInpodMark).verdict == TC_ACT_UNSPEC);
  }
}

TEST_CASE("eBPF lo ingress: rewritten DNS queries reach ztunnel's socket only", "[ebpf]") {
  Pod pod;
  const LoadedProgram lo = pod.prog(Program::LoIngress);
  auto rewritten = [&](const std::string& src, const std::string& dst, int proto) {
    return pod.dns_query_out(src, dst, proto);
  };
  SECTION("a rewritten query reaches ztunnel's socket") {
    for (int proto : {IPPROTO_UDP, IPPROTO_TCP}) {
      CHECK(run(pod.ns, lo, rewritten("10.99.0.2", "10.99.0.1", proto), kInpodMark).verdict ==
            TC_ACT_UNSPEC);
      CHECK(run(pod.ns, lo, rewritten("fd99::2", "fd99::1", proto), kInpodMark).verdict ==
            TC_ACT_UNSPEC);
    }
  }
  SECTION("an app's own socket on 127.0.0.1:15053 gets nothing") {
    pod.dns_udp4.reset();
    UniqueFd impostor = socket_in(pod.ns, {"127.0.0.1", 15053}, {.type = SOCK_DGRAM});
    auto d = delta(pod, [&] {
      CHECK(run(pod.ns, lo, rewritten("10.99.0.2", "10.99.0.1", IPPROTO_UDP), kInpodMark).verdict ==
            TC_ACT_SHOT);
    });
    CHECK(d[AMB_CNT_DROP_NO_PROXY] == 1);
  }
  SECTION("no DNS proxy: dropped") {
    pod.dns_tcp6.reset();
    CHECK(run(pod.ns, lo, rewritten("fd99::2", "fd99::1", IPPROTO_TCP), kInpodMark).verdict ==
          TC_ACT_SHOT);
  }
}

TEST_CASE("eBPF lo ingress: DNS replies come from the resolver the app asked", "[ebpf]") {
  Pod pod;
  const LoadedProgram lo = pod.prog(Program::LoIngress);
  auto rewritten = [&](const std::string& src, const std::string& dst, int proto) {
    return pod.dns_query_out(src, dst, proto);
  };
  SECTION("UDP and TCP, IPv4 and IPv6, checksums intact") {
    for (auto [client, resolver, loopback] : {std::tuple{"10.99.0.2", "10.99.0.1", "127.0.0.1"},
                                              std::tuple{"fd99::2", "fd99::1", "::1"}}) {
      for (int proto : {IPPROTO_UDP, IPPROTO_TCP}) {
        INFO(client << " proto " << proto);
        rewritten(client, resolver, proto);
        auto reply = build_packet({.src = loopback,
                                   .dst = client,
                                   .sport = 15053,
                                   .dport = 5353,
                                   .proto = proto,
                                   .tcp_flags = kSyn | kAck,
                                   .payload = "answer"});
        auto r = run(pod.ns, lo, reply, kZtunnelMark);
        CHECK(r.verdict == TC_ACT_OK);
        const Seen s = read_packet(r.out);
        CHECK(s.src == resolver);
        CHECK(s.sport == 53);
        CHECK(s.dst == client);
        CHECK(s.ip_checksum_ok);
        CHECK(s.l4_checksum_ok);
        // Not ztunnel's (unmarked, no reset): left as it is.
        CHECK(run(pod.ns, lo, reply).out == reply);
      }
    }
  }
  SECTION("the kernel's reset for a missing proxy is rewritten too: the app sees a refusal") {
    rewritten("10.99.0.2", "10.99.0.1", IPPROTO_TCP);
    auto rst = build_packet({.src = "127.0.0.1",
                             .dst = "10.99.0.2",
                             .sport = 15053,
                             .dport = 5353,
                             .tcp_flags = kRst | kAck});
    CHECK(read_packet(run(pod.ns, lo, rst).out).src == "10.99.0.1");
  }
  SECTION("a reply to a client the map does not know passes unchanged") {
    auto reply = build_packet({.src = "127.0.0.1",
                               .dst = "10.99.0.2",
                               .sport = 15053,
                               .dport = 6000,
                               .proto = IPPROTO_UDP,
                               .payload = "a"});
    auto r = run(pod.ns, lo, reply, kZtunnelMark);
    CHECK(r.verdict == TC_ACT_UNSPEC);
    CHECK(r.out == reply);
  }
}

TEST_CASE("eBPF ingress: inbound TCP goes to ztunnel's 15006", "[ebpf]") {
  Pod pod;
  const LoadedProgram ingress = pod.prog(Program::Ingress);
  auto inbound = [](const std::string& src, const std::string& dst, uint16_t dport,
                    int proto = IPPROTO_TCP) {
    return build_packet({.src = src, .dst = dst, .sport = 33000, .dport = dport, .proto = proto});
  };
  SECTION("to an app port, IPv4 and IPv6, any segment") {
    for (const auto& p :
         {inbound("10.99.0.1", "10.99.0.2", 8080), inbound("fd99::1", "fd99::2", 8080),
          build_packet(
              {.src = "10.99.0.1", .dst = "10.99.0.2", .dport = 8080, .tcp_flags = kAck})}) {
      auto d = delta(pod, [&] { run(pod.ns, ingress, p); });
      CHECK(d[kAssignedInTestRun] == 1);
    }
  }
  SECTION("exempt: HBONE on 15008, the probe source, ztunnel's mark, UDP") {
    CHECK(run(pod.ns, ingress, inbound("10.99.0.1", "10.99.0.2", 15008)).verdict == TC_ACT_UNSPEC);
    CHECK(run(pod.ns, ingress, inbound("169.254.7.127", "10.99.0.2", 8080)).verdict ==
          TC_ACT_UNSPEC);
    CHECK(run(pod.ns, ingress, inbound("fd16:9254:7127:1337:ffff:ffff:ffff:ffff", "fd99::2", 8080))
              .verdict == TC_ACT_UNSPEC);
    CHECK(run(pod.ns, ingress, inbound("10.99.0.1", "10.99.0.2", 8080), kZtunnelMark).verdict ==
          TC_ACT_UNSPEC);
    CHECK(run(pod.ns, ingress, inbound("10.99.0.1", "10.99.0.2", 53, IPPROTO_UDP)).verdict ==
          TC_ACT_UNSPEC);
  }
  SECTION("no ztunnel: dropped, the app never sees it") {
    pod.inbound.reset();
    auto d = delta(pod, [&] {
      CHECK(run(pod.ns, ingress, inbound("10.99.0.1", "10.99.0.2", 8080)).verdict == TC_ACT_SHOT);
    });
    CHECK(d[AMB_CNT_DROP_NO_PROXY] == 1);
  }
  SECTION("a segment of an established connection passes") {
    // The app's connection to a peer, looked at from the peer's side.
    UniqueFd client = connect_from(pod.ns, {"10.99.0.2", 8080});
    UniqueFd served = accept_within(pod.app.get());
    REQUIRE(served.valid());
    const std::string local = local_of(client.get());  // 10.99.0.2:<port>
    const uint16_t port = static_cast<uint16_t>(std::stoi(local.substr(local.find(':') + 1)));
    auto seg = build_packet(
        {.src = "10.99.0.2", .dst = "10.99.0.2", .sport = port, .dport = 8080, .tcp_flags = kAck});
    CHECK(run(pod.ns, ingress, seg).verdict == TC_ACT_UNSPEC);
  }
}

TEST_CASE("eBPF virtual interface ingress: the workload's TCP goes to 15001", "[ebpf]") {
  Pod pod;
  const LoadedProgram vif = pod.prog(Program::VifIngress);
  auto d = delta(pod, [&] {
    auto r = run(pod.ns, vif, build_packet({.src = "10.99.0.7", .dst = "1.1.1.1", .dport = 443}));
    CHECK(r.mark == kInpodMark);
  });
  CHECK(d[kAssignedInTestRun] == 1);
}
