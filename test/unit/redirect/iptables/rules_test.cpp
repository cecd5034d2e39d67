// Rule generation against upstream's goldens, byte for byte.
#include <catch2/catch.hpp>

#include "redirect/iptables/rules.h"
#include "support/golden.h"

using namespace ambient::redirect;
using namespace ambient::test;

namespace {

// What upstream's recording executor saw: the two save probes, then each
// restore input without its trailing newline, joined with '\n'.
std::string render(const PodRedirectConfig& cfg) {
  std::string v4 = restore_text(inpod_rules(cfg, IpFamily::V4));
  v4.pop_back();
  std::string out = "iptables-save\nip6tables-save\n" + v4;
  if (cfg.ipv6) {
    std::string v6 = restore_text(inpod_rules(cfg, IpFamily::V6));
    v6.pop_back();
    out += "\n" + v6;
  }
  return out;
}

}  // namespace

TEST_CASE("in-pod iptables rules are byte-identical to upstream's goldens", "[iptables][golden]") {
  const GoldenCase c = GENERATE(from_range(kGoldenCases));
  for (bool v6 : {false, true}) {
    const std::string name = c.file("iptables", v6);
    INFO(name);
    CHECK(render(c.config(v6)) == read_golden(name));
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
