// Where a pod's eBPF programs go, and in which order
// (docs/redirection.md#ebpf-state).
#include <catch2/catch.hpp>

#include "redirect/ebpf/backend.h"

using namespace ambient::redirect;
using namespace ambient::redirect::ebpf;

namespace {

const std::vector<Interface> kPod = {
    {.ifindex = 1, .name = "lo", .loopback = true},
    {.ifindex = 2, .name = "tunl0"},  // no Ethernet header: never touched
    {.ifindex = 3, .name = "eth0", .ethernet = true},
    {.ifindex = 4, .name = "tap0", .ethernet = true},
};

std::vector<std::string> describe(const std::vector<Attachment>& plan) {
  std::vector<std::string> out;
  out.reserve(plan.size());
  for (const Attachment& a : plan) {
    out.push_back(a.itf.name + " " + std::string(hook_name(a.hook)) + " " +
                  std::string(program_name(a.program)));
  }
  return out;
}

}  // namespace

TEST_CASE("eBPF plan: lo first, then every egress, then every ingress", "[ebpf]") {
  CHECK(describe(plan(kPod, {})) == std::vector<std::string>{
                                        "lo ingress amb_lo_ingress",
                                        "eth0 egress amb_egress",
                                        "tap0 egress amb_egress",
                                        "eth0 ingress amb_ingress",
                                        "tap0 ingress amb_ingress",
                                    });
}

TEST_CASE("eBPF plan: ingress mode and virtual interfaces", "[ebpf]") {
  const PodRedirectConfig vif{.virtual_interfaces = {"tap0", "absent0"}};
  CHECK(describe(plan(kPod, vif)) == std::vector<std::string>{
                                         "lo ingress amb_lo_ingress",
                                         "eth0 egress amb_egress",
                                         "tap0 egress amb_egress",
                                         "eth0 ingress amb_ingress",
                                         "tap0 ingress amb_vif_ingress",
                                     });
  PodRedirectConfig both = vif;
  both.ingress_mode = true;
  // As with the rules: no inbound capture, but a virtual interface's TCP
  // is still the workload's egress.
  CHECK(describe(plan(kPod, both)) == std::vector<std::string>{
                                          "lo ingress amb_lo_ingress",
                                          "eth0 egress amb_egress",
                                          "tap0 egress amb_egress",
                                          "tap0 ingress amb_vif_ingress",
                                      });
}

TEST_CASE("eBPF variants: what changes the loaded programs, and bad probe addresses", "[ebpf]") {
  auto a = variant_for({.dns_capture = true});
  REQUIRE(a);
  auto b = variant_for({.dns_capture = true, .ingress_mode = true, .virtual_interfaces = {"x"}});
  REQUIRE(b);
  CHECK(*a == *b);  // where they attach is not the programs' business
  CHECK(*a != *variant_for({.dns_capture = false}));
  CHECK(a->probe_snat_v4 == std::array<uint8_t, 4>{169, 254, 7, 127});
  CHECK_FALSE(variant_for({.probe_snat_ipv4 = "fd00::1"}));
  CHECK_FALSE(variant_for({.probe_snat_ipv6 = "10.0.0.1"}));
  CHECK_FALSE(variant_for({.probe_snat_ipv4 = "nonsense"}));
  CHECK_FALSE(variant_for({.probe_snat_ipv4 = ""})->probe_snat_v4);
}
