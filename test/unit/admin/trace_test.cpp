// The pure parts of `trace`: endpoint parsing, counter parsing and
// differences, and how what the probe saw becomes the answer. The probe
// itself runs in test/e2e/admin_test.cpp on every backend.
#include <catch2/catch.hpp>

#include "admin/trace.h"

using namespace ambient;
using namespace ambient::admin;
using ambient::netns::TcpSocket;

TEST_CASE("trace parses IP:PORT and [IPv6]:PORT, and says what is wrong", "[admin][trace]") {
  auto v4 = parse_endpoint("10.244.0.9:8080");
  REQUIRE(v4);
  CHECK(v4->ip == "10.244.0.9");
  CHECK(v4->port == 8080);
  CHECK_FALSE(v4->v6);
  auto v6 = parse_endpoint("[fd00::9]:53");
  REQUIRE(v6);
  CHECK(v6->v6);
  CHECK(v6->text() == "[fd00::9]:53");
  for (const char* bad : {"10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "fd00::9:53", "web:80",
                          "10.0.0.1:8x", "[fd00::9]53", ""}) {
    INFO(bad);
    auto r = parse_endpoint(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::InvalidArgument);
  }
}

TEST_CASE("trace reads iptables-save -c counters of our chains' rules and what moved",
          "[admin][trace]") {
  const std::string before =
      "*nat\n"
      ":OUTPUT ACCEPT [0:0]\n"
      "[3:180] -A OUTPUT -j ISTIO_OUTPUT\n"
      "[0:0] -A OUTPUT -j KUBE-SERVICES\n"
      "[1:60] -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT "
      "--to-ports 15001\n"
      "COMMIT\n";
  std::string after = before;
  after.replace(after.find("[3:180]"), 7, "[4:240]");
  after.replace(after.find("[1:60]"), 6, "[2:120]");
  const CounterMap b = parse_iptables_counters(before);
  CHECK(b.size() == 1);  // KUBE-SERVICES is not ours; the hook decides nothing
  CHECK(moved(b, parse_iptables_counters(after)) ==
        std::vector<std::string>{
            "-t nat -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j "
            "REDIRECT --to-ports 15001 (+1)"});
  CHECK(moved(b, b).empty());
}

TEST_CASE("trace reads nft counters of the istio tables only", "[admin][trace]") {
  const std::string ruleset =
      "table inet istio-ambient-nat {\n"
      "\tchain istio-output {\n"
      "\t\ttype nat hook output priority dstnat; policy accept;\n"
      "\t\tmeta l4proto tcp ip daddr != 127.0.0.1 counter packets 2 bytes 120 redirect to "
      ":15001\n"
      "\t}\n"
      "}\n"
      "table ip other {\n"
      "\tchain c {\n"
      "\t\tcounter packets 9 bytes 9 accept\n"
      "\t}\n"
      "}\n";
  const CounterMap m = parse_nft_counters(ruleset);
  REQUIRE(m.size() == 1);
  CHECK(m.begin()->first ==
        "istio-ambient-nat istio-output: meta l4proto tcp ip daddr != 127.0.0.1 redirect to "
        ":15001");
  CHECK(m.begin()->second == 2);
}

namespace {

ProbeFacts outbound_to(const std::string& dest) {
  ProbeFacts f;
  f.enrolled = true;
  f.dest = *parse_endpoint(dest);
  f.outcome = "connected";
  for (uint16_t port : {15001, 15006, 15008, 15053}) {
    f.listeners.push_back({.proto = "tcp", .address = "::", .port = port, .mark = 1337});
  }
  f.listeners.push_back({.proto = "udp", .address = "127.0.0.1", .port = 15053, .mark = 1337});
  return f;
}

}  // namespace

TEST_CASE("trace names the receiver from the accepting socket", "[admin][trace]") {
  SECTION("REDIRECT to 15001: the destination the probe connected to is the original") {
    ProbeFacts f = outbound_to("10.244.0.9:8080");
    f.server = TcpSocket{.local_address = "127.0.0.1", .local_port = 15001, .mark = 1337};
    f.decisions = {"-t nat -A ISTIO_OUTPUT ... --to-ports 15001 (+1)"};
    auto r = classify(f);
    CHECK(r.receiver() == "ztunnel-outbound");
    CHECK(r.receiver_port() == 15001);
    CHECK(r.original_destination() == "10.244.0.9:8080");
    CHECK_THAT(r.explanation(), Catch::Contains("counted: -t nat"));
  }
  SECTION("an eBPF hand-over: the accepted socket's own address is the original") {
    ProbeFacts f = outbound_to("10.244.0.9:8080");
    f.server = TcpSocket{.local_address = "::ffff:10.244.0.9", .local_port = 8080};
    f.ebpf_captured = true;
    f.decisions = {"looped (+1)", "outbound (+1)"};
    auto r = classify(f);
    CHECK(r.receiver() == "ztunnel-outbound");
    CHECK(r.receiver_port() == 15001);
    CHECK(r.original_destination() == "10.244.0.9:8080");
  }
  SECTION("inbound to 15008 reaches ztunnel directly") {
    ProbeFacts f = outbound_to("10.244.0.9:15008");
    f.inbound = true;
    f.server = TcpSocket{.local_address = "::ffff:10.244.0.9", .local_port = 15008};
    auto r = classify(f);
    CHECK(r.receiver() == "ztunnel-hbone");
    CHECK_THAT(r.explanation(), Catch::Contains("directly"));
    CHECK_THAT(r.explanation(), Catch::Contains("no redirect rule or program decision"));
  }
  SECTION("ztunnel's mark: not captured, the destination answered itself") {
    ProbeFacts f = outbound_to("10.244.0.9:8080");
    f.mark = 1337;
    auto r = classify(f);
    CHECK(r.receiver() == "app");
    CHECK(r.receiver_port() == 8080);
    CHECK_THAT(r.explanation(), Catch::Contains("mark 0x539 is ztunnel's own"));
  }
  SECTION("a pod not enrolled: its app's listener") {
    ProbeFacts f = outbound_to("10.244.0.9:8080");
    f.enrolled = false;
    f.inbound = true;
    f.listeners = {{.proto = "tcp", .address = "0.0.0.0", .port = 8080}};
    f.server = TcpSocket{.local_address = "10.244.0.9", .local_port = 8080};
    auto r = classify(f);
    CHECK(r.receiver() == "app");
    CHECK_FALSE(r.enrolled());
    CHECK_THAT(r.explanation(), Catch::Contains("not enrolled"));
  }
  SECTION("refused and unanswered: nobody") {
    ProbeFacts f = outbound_to("10.244.0.9:8080");
    f.outcome = "refused";
    CHECK(classify(f).receiver() == "nobody");
    f.outcome = "timeout";
    CHECK_THAT(classify(f).explanation(), Catch::Contains("no answer within 1 s"));
  }
  SECTION("UDP DNS answered after a DNS redirect: ztunnel's DNS proxy") {
    ProbeFacts f = outbound_to("10.96.0.10:53");
    f.udp = true;
    f.outcome = "answered";
    f.decisions = {"... --to-port 15053 (+1)"};
    f.dns_counted = true;
    auto r = classify(f);
    CHECK(r.receiver() == "ztunnel-dns");
    CHECK(r.receiver_port() == 15053);
    CHECK(r.original_destination() == "10.96.0.10:53");
  }
  SECTION("counters that cannot be read are said to be missing") {
    ProbeFacts f = outbound_to("10.244.0.9:8080");
    f.server = TcpSocket{.local_address = "127.0.0.1", .local_port = 15001};
    f.counters_error = "nft: not found";
    CHECK_THAT(classify(f).explanation(), Catch::Contains("no counters could be read (nft"));
  }
}
