// nftables rule generation against upstream's goldens, byte for byte.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "redirect/nftables/rules.h"

using namespace ambient::redirect;

namespace {
std::string read_golden(const std::string& name) {
  std::ifstream f(std::string(AMBIENT_GOLDEN_DIR) + "/nftables/" + name);
  REQUIRE(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

TEST_CASE("in-pod nftables text is byte-identical to upstream's goldens", "[nftables][golden]") {
  struct Case {
    std::string golden;
    bool dns, ingress;
    std::vector<std::string> vifs;
  };
  const std::vector<std::string> vifs = {"fake1s0f0", "fake1s0f1"};
  auto c = GENERATE_COPY(values<Case>({
      {"default", true, false, {}},
      {"ingress", false, true, {}},
      {"virtual_interfaces", false, false, vifs},
      {"ingress_and_virtual_interfaces", false, true, vifs},
      {"dns_pod_enabled_and_off_globally", true, false, {}},
      {"dns_pod_disabled_and_on_globally", false, false, {}},
  }));
  for (bool v6 : {false, true}) {
    PodRedirectConfig cfg{.dns_capture = c.dns,
                          .ipv6 = v6,
                          .ingress_mode = c.ingress,
                          .virtual_interfaces = c.vifs,
                          .probe_snat_ipv6 = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164"};
    std::string name = c.golden + (v6 ? "_ipv6" : "") + ".golden";
    INFO(name);
    CHECK(inpod_nft_text(cfg) == read_golden(name));
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
