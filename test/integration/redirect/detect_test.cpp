// Real backend detection in a clean netns the test creates: the same answer
// every time, and no tables created by detecting
// (docs/field-lessons.md#p19).
#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>

#include "netns/netns.h"
#include "process/process.h"
#include "redirect/detect.h"
#include "support/temp_dir.h"
#include "support/test_netns.h"

using namespace ambient;
using namespace ambient::redirect;
namespace fs = std::filesystem;

using HostNetns = ambient::test::TestNetns;
using TempDir = ambient::test::TempDir;

namespace {

Detection detect_in(const HostNetns& host, const DetectOptions& opts) {
  auto got = ambient::test::in_netns(host, [&] { return detect_backend(opts); });
  AMBIENT_REQUIRE_OK(got);
  return std::move(*got);
}

// Nothing but comments in an *-save dump: no table was ever instantiated.
bool no_tables(const std::string& save) {
  return save.find('*') == std::string::npos && save.find(':') == std::string::npos;
}

}  // namespace

// docs/field-lessons.md#p19
TEST_CASE("real detection in a clean netns is stable and creates no tables", "[detect]") {
  HostNetns host;
  TempDir dir("detect-it-");
  const bool native = GENERATE(false, true);
  DetectOptions opts{.run_dir = dir.path() + "/run", .native_nftables = native};

  auto first = detect_in(host, opts);
  auto second = detect_in(host, opts);
  opts.run_dir = dir.path() + "/other-run";  // no stored choice: decided again from the host
  auto third = detect_in(host, opts);

  INFO(first.reason);
  CHECK(first.kind == (native ? BackendKind::Nftables : BackendKind::IptablesNft));
  CHECK_FALSE(first.from_cache);
  CHECK(second.kind == first.kind);
  CHECK(second.from_cache);
  CHECK(third.kind == first.kind);
  CHECK_FALSE(third.from_cache);
  CHECK(first.leftovers.empty());
  CHECK(third.leftovers.empty());
  CHECK(fs::exists(dir.path() + "/run/redirect-backend.json"));

  for (auto bin : {"iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save",
                   "ip6tables-nft-save"}) {
    std::string out = host.exec({bin});
    INFO(bin << ":\n" << out);
    CHECK(no_tables(out));
  }
  CHECK(host.exec({"nft", "list", "ruleset"}).empty());
  CHECK(host.exec({"ipset", "list", "-n"}).empty());
}

TEST_CASE("detection reports our chains left in the other iptables variant", "[detect]") {
  HostNetns host;
  TempDir dir("detect-it-");
  host.exec({"iptables-legacy", "-t", "nat", "-N", "ISTIO_POSTRT"});
  auto d = detect_in(host, {.run_dir = dir.path(), .force_iptables = IptablesVariant::Nft});
  CHECK(d.kind == BackendKind::IptablesNft);
  REQUIRE(d.iptables_probe);
  REQUIRE(*d.iptables_probe);
  CHECK(**d.iptables_probe == IptablesVariant::Nft);
  CHECK(d.leftovers == std::vector<std::string>{"iptables-legacy: ISTIO_* chains in nat"});

  // With NATIVE_NFTABLES those chains keep the node on iptables-legacy.
  auto native = detect_in(host, {.run_dir = dir.path() + "/native", .native_nftables = true});
  CHECK(native.kind == BackendKind::IptablesLegacy);
  CHECK_THAT(native.reason, Catch::Contains("until the node reboots"));
}
