// Upstream's golden files (test/golden/upstream, compiled in as
// AMBIENT_GOLDEN_DIR) and the in-pod scenarios they were recorded with,
// the one case table of the iptables and nftables rule tests.
#pragma once

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "redirect/backend.h"
#include "support/files.h"

#ifndef AMBIENT_GOLDEN_DIR
#error "AMBIENT_GOLDEN_DIR (test/golden/upstream) is defined for the unit tests only"
#endif

namespace ambient::test {

// `rel` below test/golden/upstream, e.g. "nftables/hostprobe.golden".
inline std::string golden_path(const std::string& rel) {
  return std::string(AMBIENT_GOLDEN_DIR) + "/" + rel;
}

// A golden file's bytes; fails the test when it is missing.
inline std::string read_golden(const std::string& rel) {
  auto text = try_read_file(golden_path(rel));
  INFO("golden file " << golden_path(rel));
  REQUIRE(text);
  return *text;
}

// The IPv6 probe SNAT address upstream's rule tests configure.
inline const std::string kGoldenProbeSnatIpv6 = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164";

// One upstream in-pod scenario: <name>.golden and <name>_ipv6.golden, in
// both iptables/ and nftables/.
struct GoldenCase {
  std::string name;
  bool dns, ingress;
  std::vector<std::string> vifs;

  // The configuration upstream recorded it with, for IPv4 alone or both.
  redirect::PodRedirectConfig config(bool ipv6) const {
    return {.dns_capture = dns,
            .ipv6 = ipv6,
            .ingress_mode = ingress,
            .virtual_interfaces = vifs,
            .probe_snat_ipv6 = kGoldenProbeSnatIpv6};
  }
  // Its file for `backend` ("iptables" or "nftables"), for read_golden().
  std::string file(const std::string& backend, bool ipv6) const {
    return backend + "/" + name + (ipv6 ? "_ipv6" : "") + ".golden";
  }
};

inline const std::vector<std::string> kGoldenVirtualInterfaces = {"fake1s0f0", "fake1s0f1"};

// Every in-pod scenario, as in `auto c = GENERATE(from_range(kGoldenCases));`.
inline const std::vector<GoldenCase> kGoldenCases = {
    {"default", true, false, {}},
    {"ingress", false, true, {}},
    {"virtual_interfaces", false, false, kGoldenVirtualInterfaces},
    {"ingress_and_virtual_interfaces", false, true, kGoldenVirtualInterfaces},
    {"dns_pod_enabled_and_off_globally", true, false, {}},
    {"dns_pod_disabled_and_on_globally", false, false, {}},
};

}  // namespace ambient::test
