// nftables rule generation against upstream's goldens, byte for byte.
#include <catch2/catch.hpp>

#include "redirect/nftables/rules.h"
#include "support/golden.h"

using namespace ambient::redirect;
using namespace ambient::test;

TEST_CASE("in-pod nftables text is byte-identical to upstream's goldens", "[nftables][golden]") {
  const GoldenCase c = GENERATE(from_range(kGoldenCases));
  for (bool v6 : {false, true}) {
    const std::string name = c.file("nftables", v6);
    INFO(name);
    CHECK(inpod_nft_text(c.config(v6)) == read_golden(name));
  }
}

TEST_CASE("the applied nftables text also removes tables the configuration does not use",
          "[nftables]") {
  PodRedirectConfig no_dns{.dns_capture = false};
  std::string t = inpod_nft_apply_text(no_dns);
  CHECK(t.rfind(inpod_nft_text(no_dns), 0) == 0);
  CHECK(t.find("add table inet istio-ambient-raw\ndelete table inet istio-ambient-raw\n") !=
        std::string::npos);
  PodRedirectConfig dns{.dns_capture = true};
  CHECK(inpod_nft_apply_text(dns) == inpod_nft_text(dns));
}
