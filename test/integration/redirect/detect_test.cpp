// Real backend detection in a clean netns the test creates: the same answer
// every time and no tables created by detecting (P19); and the host `nft`
// reads what libnftables writes (P24).
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include "netns/netns.h"
#include "process/process.h"
#include "redirect/detect.h"
#include "support/test_netns.h"

using namespace ambient;
using namespace ambient::redirect;
namespace fs = std::filesystem;

using HostNetns = ambient::test::TestNetns;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "detect-it-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Detection detect_in(const HostNetns& host, const DetectOptions& opts) {
  std::optional<Result<Detection>> got;
  auto ran = netns::run_in_netns(host.ns(), [&]() -> Result<> {
    got.emplace(detect_backend(opts));
    return {};
  });
  REQUIRE(ran);
  REQUIRE(got);
  INFO((*got ? std::string() : got->error().describe()));
  REQUIRE(*got);
  return std::move(**got);
}

// Nothing but comments in an *-save dump: no table was ever instantiated.
bool no_tables(const std::string& save) {
  return save.find('*') == std::string::npos && save.find(':') == std::string::npos;
}

}  // namespace

TEST_CASE("real detection in a clean netns is stable and creates no tables (P19)", "[detect]") {
  HostNetns host;
  TempDir dir;
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

TEST_CASE("detection reports our chains left in the other iptables family", "[detect]") {
  HostNetns host;
  TempDir dir;
  host.exec({"iptables-legacy", "-t", "nat", "-N", "ISTIO_POSTRT"});
  auto d = detect_in(host, {.run_dir = dir.path(), .force_iptables_binary = "nft"});
  CHECK(d.kind == BackendKind::IptablesNft);
  CHECK(d.leftovers == std::vector<std::string>{"iptables-legacy: ISTIO_* chains in nat"});

  // With NATIVE_NFTABLES those chains keep the node on iptables-legacy.
  auto native = detect_in(host, {.run_dir = dir.path() + "/native", .native_nftables = true});
  CHECK(native.kind == BackendKind::IptablesLegacy);
  CHECK_THAT(native.reason, Catch::Contains("until the node reboots"));
}

TEST_CASE("the host nft lists what libnftables writes (P24)", "[detect]") {
  auto warning = check_host_nft_compat();
  INFO((warning ? std::string() : warning.error().describe()));
  REQUIRE(warning);
  CHECK(*warning == "");

  SECTION("a missing binary is a warning, not an error") {
    auto missing = check_host_nft_compat("/nonexistent/nft");
    REQUIRE(missing);
    CHECK_THAT(*missing, Catch::Contains("not found"));
  }
  SECTION("a binary killed by a signal is reported as a crash") {
    TempDir dir;
    const std::string fake = dir.path() + "/nft";
    {
      std::ofstream f(fake);
      f << "#!/bin/sh\nkill -SEGV $$\n";
    }
    fs::permissions(fake, fs::perms::owner_all);
    auto crashed = check_host_nft_compat(fake);
    REQUIRE(crashed);
    CHECK_THAT(*crashed, Catch::Contains("killed by a signal"));
  }
  SECTION("a binary that lists less than was written is reported") {
    TempDir dir;
    const std::string fake = dir.path() + "/nft";
    {
      std::ofstream f(fake);
      f << "#!/bin/sh\nnft \"$@\" | grep -v 'ct zone'\n";
    }
    fs::permissions(fake, fs::perms::owner_all);
    auto partial = check_host_nft_compat(fake);
    REQUIRE(partial);
    CHECK_THAT(*partial, Catch::Contains("cannot fully read"));
  }
}
