// The host `nft` reads what libnftables writes, and the check reports a
// binary that does not (docs/field-lessons.md#p24).
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "redirect/nftables/compat.h"
#include "support/files.h"
#include "support/temp_dir.h"

using namespace ambient;
using namespace ambient::redirect;
namespace fs = std::filesystem;
using TempDir = ambient::test::TempDir;

namespace {

// An executable shell script standing in for the host's nft.
std::string fake_nft(const TempDir& dir, const std::string& script) {
  std::string path = dir.path() + "/nft";
  ambient::test::write_file(path, "#!/bin/sh\n" + script + "\n");
  fs::permissions(path, fs::perms::owner_all);
  return path;
}

}  // namespace

TEST_CASE("the host nft lists what libnftables writes", "[nftables][compat]") {
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
    TempDir dir("nft-compat-");
    auto crashed = check_host_nft_compat(fake_nft(dir, "kill -SEGV $$"));
    REQUIRE(crashed);
    CHECK_THAT(*crashed, Catch::Contains("killed by a signal"));
  }
  SECTION("a binary that lists less than was written is reported") {
    TempDir dir("nft-compat-");
    auto partial = check_host_nft_compat(fake_nft(dir, "nft \"$@\" | grep -v 'ct zone'"));
    REQUIRE(partial);
    CHECK_THAT(*partial, Catch::Contains("cannot fully read"));
  }
}
