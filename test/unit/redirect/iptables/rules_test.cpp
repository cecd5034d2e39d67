// Rule generation against upstream's goldens, byte for byte.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "redirect/iptables/rules.h"

using namespace ambient::redirect;

namespace {

std::string read_golden(const std::string& name) {
  std::ifstream f(std::string(AMBIENT_GOLDEN_DIR) + "/iptables/" + name);
  REQUIRE(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// What upstream's recording executor saw: the two save probes, then each
// restore input without its trailing newline, joined with '\n'.
std::string render(const PodRedirectConfig& cfg) {
  std::string v4 = restore_text(inpod_rules(cfg, false));
  v4.pop_back();
  std::string out = "iptables-save\nip6tables-save\n" + v4;
  if (cfg.ipv6) {
    std::string v6 = restore_text(inpod_rules(cfg, true));
    v6.pop_back();
    out += "\n" + v6;
  }
  return out;
}

}  // namespace

TEST_CASE("in-pod iptables rules are byte-identical to upstream's goldens", "[iptables][golden]") {
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
    CHECK(render(cfg) == read_golden(name));
  }
}

TEST_CASE("removal text undoes exactly our jumps and chains", "[iptables]") {
  const std::string save =
      "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n"
      ":ISTIO_PRERT - [0:0]\n:OTHER - [0:0]\n-A PREROUTING -j ISTIO_PRERT\n"
      "-A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -j OTHER\n-A ISTIO_OUTPUT -o lo -j ACCEPT\nCOMMIT\n"
      "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n";
  CHECK(removal_text(save) ==
        "*nat\n-D PREROUTING -j ISTIO_PRERT\n-D OUTPUT -j ISTIO_OUTPUT\n-F ISTIO_OUTPUT\n"
        "-F ISTIO_PRERT\n-X ISTIO_OUTPUT\n-X ISTIO_PRERT\nCOMMIT\n");
  CHECK(removal_text("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").empty());
}
