// Rule-set fingerprints (redirect/netfilter_state.h) against real netns:
// equal rule sets compare equal whatever their counters and handles; any
// change to a rule, a chain or the set of tables shows.
#include <linux/netfilter.h>

#include <catch2/catch.hpp>
#include <functional>

#include "netns/netns.h"
#include "redirect/backend.h"
#include "redirect/iptables/rules.h"
#include "redirect/netfilter_state.h"
#include "redirect/nftables/rules.h"
#include "support/test_netns.h"

using namespace ambient;
using namespace ambient::redirect;
using ambient::test::TestNetns;

namespace {

// `read` run inside the pod's netns.
std::string read_in(const TestNetns& pod, const std::function<Result<std::string>()>& read) {
  auto out = ambient::test::in_netns(pod, read);
  AMBIENT_REQUIRE_OK(out);
  return *out;
}

std::string nft_fingerprint(const TestNetns& pod, uint8_t family) {
  return read_in(pod, [&] { return nf_tables_fingerprint_here(family); });
}

std::string legacy_fingerprint(const TestNetns& pod, IpFamily ip) {
  return read_in(pod, [&] { return xtables_legacy_fingerprint_here(ip); });
}

// Some TCP connection attempts to a closed port: they pass nat OUTPUT.
void traffic(const TestNetns& pod) {
  pod.exec({"bash", "-c", "for i in 1 2 3; do : 2>/dev/null </dev/tcp/127.0.0.1/9; done; true"});
}

}  // namespace

TEST_CASE("nf_tables fingerprints: counters and handles aside, equal rule sets are equal",
          "[netfilter_state]") {
  const PodRedirectConfig cfg{.dns_capture = true, .ipv6 = true};
  TestNetns a, b;
  CHECK(nft_fingerprint(a, NFPROTO_UNSPEC).empty());
  // Different handles in b: a table made and deleted first.
  b.exec({"nft", "add", "table", "inet", "gone"});
  b.exec({"nft", "delete", "table", "inet", "gone"});
  a.exec({"nft", "-f", "-"}, inpod_nft_text(cfg));
  b.exec({"nft", "-f", "-"}, inpod_nft_text(cfg));
  traffic(b);
  REQUIRE_THAT(b.exec({"nft", "list", "chain", "inet", "istio-ambient-nat", "output"}),
               !Catch::Contains("packets 0 bytes 0"));
  const std::string ours = nft_fingerprint(a, NFPROTO_UNSPEC);
  CHECK_FALSE(ours.empty());
  CHECK(nft_fingerprint(b, NFPROTO_UNSPEC) == ours);

  SECTION("rules replaced by another") {
    b.exec({"nft", "flush", "chain", "inet", "istio-ambient-nat", "istio-output"});
    b.exec({"nft", "add", "rule", "inet", "istio-ambient-nat", "istio-output", "counter"});
    CHECK(nft_fingerprint(b, NFPROTO_UNSPEC) != ours);
  }
  SECTION("a base chain's policy") {
    b.exec({"nft", "add", "chain", "inet", "istio-ambient-nat", "output",
            "{ type nat hook output priority -100 ; policy drop ; }"});
    CHECK(nft_fingerprint(b, NFPROTO_UNSPEC) != ours);
  }
  SECTION("an empty chain more") {
    b.exec({"nft", "add", "chain", "inet", "istio-ambient-nat", "extra"});
    CHECK(nft_fingerprint(b, NFPROTO_UNSPEC) != ours);
  }
  SECTION("another table, in another family") {
    b.exec({"nft", "add", "table", "ip", "other"});
    CHECK(nft_fingerprint(b, NFPROTO_UNSPEC) != ours);
    CHECK(nft_fingerprint(b, NFPROTO_INET) == nft_fingerprint(a, NFPROTO_INET));
  }
}

TEST_CASE("iptables-nft and legacy fingerprints see their own rules only, counters aside",
          "[netfilter_state]") {
  const PodRedirectConfig cfg{.dns_capture = true};
  const std::string rules = restore_text(inpod_rules(cfg, IpFamily::V4));
  TestNetns a, b;
  SECTION("iptables-nft: family ip") {
    a.exec({"iptables-nft-restore", "--noflush"}, rules);
    b.exec({"iptables-nft-restore", "--noflush"}, rules);
    traffic(b);
    const std::string ours = nft_fingerprint(a, NFPROTO_IPV4);
    CHECK(nft_fingerprint(b, NFPROTO_IPV4) == ours);
    CHECK(nft_fingerprint(b, NFPROTO_IPV6).empty());
    b.exec({"iptables-nft", "-t", "nat", "-R", "ISTIO_OUTPUT", "1", "-j", "RETURN"});
    CHECK(nft_fingerprint(b, NFPROTO_IPV4) != ours);
  }
  SECTION("legacy") {
    bool in_use = true;
    REQUIRE(netns::run_in_netns(a.ns(), [&]() -> Result<> {
      AMBIENT_ASSIGN_OR_RETURN(in_use, xtables_legacy_in_use_here(IpFamily::V4));
      return {};
    }));
    CHECK_FALSE(in_use);  // a new netns: no legacy table yet
    a.exec({"iptables-legacy-restore", "--noflush"}, rules);
    b.exec({"iptables-legacy-restore", "--noflush"}, rules);
    traffic(b);
    REQUIRE_THAT(b.exec({"iptables-legacy-save", "-c", "-t", "nat"}),
                 !Catch::Contains("[0:0] -A OUTPUT -j ISTIO_OUTPUT"));
    const std::string ours = legacy_fingerprint(a, IpFamily::V4);
    CHECK_FALSE(ours.empty());
    CHECK(legacy_fingerprint(b, IpFamily::V4) == ours);
    CHECK(nft_fingerprint(b, NFPROTO_UNSPEC).empty());
    SECTION("a rule's match changed") {
      b.exec({"iptables-legacy", "-t", "nat", "-R", "ISTIO_OUTPUT", "1", "-d", "169.254.7.128",
              "-p", "tcp", "-j", "ACCEPT"});
      CHECK(legacy_fingerprint(b, IpFamily::V4) != ours);
    }
    SECTION("a jump retargeted") {
      b.exec({"iptables-legacy", "-t", "nat", "-N", "OTHER"});
      b.exec({"iptables-legacy", "-t", "nat", "-R", "OUTPUT", "1", "-j", "OTHER"});
      CHECK(legacy_fingerprint(b, IpFamily::V4) != ours);
    }
    SECTION("a built-in chain's policy") {
      b.exec({"iptables-legacy", "-t", "mangle", "-P", "OUTPUT", "DROP"});
      CHECK(legacy_fingerprint(b, IpFamily::V4) != ours);
    }
  }
}
