// The native nftables backend against real, empty pod netns.
#include <catch2/catch.hpp>

#include <optional>
#include <random>

#include "netns/netns.h"
#include "process/process.h"
#include "redirect/nftables/backend.h"
#include "redirect/nftables/rules.h"
#include "support/test_netns.h"
#include "support/text.h"

using namespace ambient;
using namespace ambient::redirect;
using Netns = ambient::test::TestNetns;

namespace {}  // namespace

TEST_CASE("nftables backend: install, verify, idempotency, removal", "[nftables]") {
  Netns pod;
  NftablesBackend b;
  PodRedirectConfig cfg{.dns_capture = true, .ipv6 = true};
  REQUIRE(b.install(pod.ns(), cfg));
  auto v = b.verify(pod.ns(), cfg);
  REQUIRE(v);
  INFO((v->problems.empty() ? std::string() : v->problems.front()));
  CHECK(v->complete);

  // The kernel holds exactly what the golden text gives when `nft` applies it.
  Netns scratch;
  scratch.exec({"nft", "-f", "-"}, inpod_nft_text(cfg));
  CHECK(pod.exec({"nft", "list", "ruleset"}) == scratch.exec({"nft", "list", "ruleset"}));

  const std::string once = pod.exec({"nft", "list", "ruleset"});
  REQUIRE(b.install(pod.ns(), cfg));
  CHECK(pod.exec({"nft", "list", "ruleset"}) == once);
  CHECK_THAT(pod.exec({"ip", "rule"}), Catch::Contains("fwmark 0x111/0xfff lookup 100"));

  SECTION("a later configuration without DNS leaves no raw table") {
    PodRedirectConfig no_dns{.ipv6 = true};
    REQUIRE(b.install(pod.ns(), no_dns));
    CHECK(pod.exec({"nft", "list", "tables"}).find("istio-ambient-raw") == std::string::npos);
    CHECK(b.verify(pod.ns(), no_dns)->complete);
  }
  SECTION("a rule deleted behind our back is found and put back") {
    pod.exec({"nft", "flush", "chain", "inet", "istio-ambient-nat", "istio-output"});
    CHECK_FALSE(b.verify(pod.ns(), cfg)->complete);
    REQUIRE(b.install(pod.ns(), cfg));
    CHECK(b.verify(pod.ns(), cfg)->complete);
  }
  REQUIRE(b.remove(pod.ns(), cfg));
  CHECK(pod.exec({"nft", "list", "ruleset"}).empty());
  CHECK(pod.exec({"ip", "rule"}).find("0x111") == std::string::npos);
  REQUIRE(b.remove(pod.ns(), cfg));  // idempotent
}

TEST_CASE("nftables backend: verification by fingerprint still finds every problem", "[nftables]") {
  NftablesBackend b;
  PodRedirectConfig cfg{.dns_capture = true};
  Netns first, second;
  REQUIRE(b.install(first.ns(), cfg));
  REQUIRE(b.install(second.ns(), cfg));
  REQUIRE(b.verify(first.ns(), cfg)->complete);   // makes the reference fingerprint
  REQUIRE(b.verify(second.ns(), cfg)->complete);  // the same ruleset: compared only
  SECTION("someone else's table next to ours is no problem") {
    second.exec({"nft", "add", "table", "inet", "other"});
    CHECK(b.verify(second.ns(), cfg)->complete);
    CHECK(b.verify(first.ns(), cfg)->complete);  // the reference is still ours alone
  }
  SECTION("a flushed chain") {
    second.exec({"nft", "flush", "chain", "inet", "istio-ambient-nat", "istio-output"});
    auto v = b.verify(second.ns(), cfg);
    REQUIRE(v);
    CHECK_FALSE(v->complete);
    CHECK_THAT(v->problems.front(), Catch::Contains("istio-ambient-nat/istio-output has 0 rules"));
  }
  SECTION("a rule changed in place (same count)") {
    const std::string chain =
        second.exec({"nft", "list", "chain", "inet", "istio-ambient-nat", "istio-output"});
    const size_t rules = ambient::test::count_of(chain, "counter");
    REQUIRE(rules > 1);
    second.exec({"nft", "flush", "chain", "inet", "istio-ambient-nat", "istio-output"});
    for (size_t i = 0; i < rules; ++i) {  // as many rules as ours, none of them ours
      second.exec({"nft", "add", "rule", "inet", "istio-ambient-nat", "istio-output", "counter"});
    }
    auto v = b.verify(second.ns(), cfg);
    REQUIRE(v);
    CHECK_FALSE(v->complete);
    REQUIRE(b.install(second.ns(), cfg));
    CHECK(b.verify(second.ns(), cfg)->complete);
  }
  SECTION("a missing table") {
    second.exec({"nft", "delete", "table", "inet", "istio-ambient-raw"});
    CHECK_FALSE(b.verify(second.ns(), cfg)->complete);
  }
  SECTION("missing routing, with the rules intact") {
    second.exec({"ip", "rule", "del", "fwmark", "0x111/0xfff", "table", "100"});
    auto v = b.verify(second.ns(), cfg);
    REQUIRE(v);
    CHECK_FALSE(v->complete);
    REQUIRE(b.install(second.ns(), cfg));  // and the install puts it back
    CHECK(b.verify(second.ns(), cfg)->complete);
  }
}

TEST_CASE("nftables backend: a failing transaction leaves nothing installed", "[nftables]") {
  Netns pod;
  NftablesBackend b;
  b.set_extra_commands_for_test("add rule inet istio-ambient-nat no-such-chain counter accept\n");
  auto r = b.install(pod.ns(), {.dns_capture = true});
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("nft:") && Catch::Contains("install nftables"));
  CHECK(pod.exec({"nft", "list", "ruleset"}).empty());  // not even the first table
  CHECK(pod.exec({"ip", "rule"}).find("0x111") == std::string::npos);
}
