#include <catch2/catch.hpp>

#include <map>

#include "agent/pod_config.h"
#include "config/config.h"

using namespace ambient::agent;

namespace {
auto env_of(std::map<std::string, std::string> m) {
  return [m = std::move(m)](const char* n) -> const char* {
    auto it = m.find(n);
    return it == m.end() ? nullptr : it->second.c_str();
  };
}
}  // namespace

TEST_CASE("agent config: upstream env vars, flags win over env", "[agent][config]") {
  const char* argv[] = {"ambient-agent", "--ambient-dns-capture=false", "--host-root", "/host"};
  auto r = parse_config(4, argv,
                        env_of({{"AMBIENT_DNS_CAPTURE", "true"},
                                {"AMBIENT_IPV6", "True"},
                                {"EXCLUDE_NAMESPACES", " kube-system, ,istio-system "},
                                {"CNI_AGENT_RUN_DIR", "/run/x"},
                                {"AMBIENT_ENROLL_NAMESPACES", "*"}}));
  REQUIRE(r);
  CHECK_FALSE(r->config.dns_capture);
  CHECK(r->config.ipv6);
  CHECK(r->config.host_root == "/host");
  CHECK(r->config.run_dir == "/run/x");
  CHECK(r->config.exclude_namespaces == std::vector<std::string>{"kube-system", "istio-system"});
}

TEST_CASE("agent config errors are clear", "[agent][config]") {
  auto [key, value, fragment] = GENERATE(table<std::string, std::string, std::string>({
      {"AMBIENT_IPV6", "yes", "not a boolean"},
      {"HOST_PROBE_SNAT_IP", "fd00::1", "HOST_PROBE_SNAT_IP"},
      {"FORCE_IPTABLES_BINARY", "auto", "legacy or nft"},
      {"AMBIENT_HEALTH_PORT", "80a", "not an integer"},
      {"AMBIENT_INSTALL_CNI", "maybe", "true, false or auto"},
  }));
  const char* argv[] = {"ambient-agent"};
  auto r = parse_config(1, argv, env_of({{key, value}, {"AMBIENT_ENROLL_NAMESPACES", "*"}}));
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains(fragment));
}

TEST_CASE("the standalone agent refuses to start without an enrollment policy", "[agent][config]") {
  const char* argv[] = {"ambient-agent"};
  auto r = parse_config(1, argv, env_of({}));
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("--enroll-namespaces"));
  const char* bad[] = {"ambient-agent", "--no-such-flag"};
  CHECK_FALSE(parse_config(2, bad, env_of({{"AMBIENT_ENROLL_NAMESPACES", "*"}})));
}

TEST_CASE("--help documents every flag with its env var", "[agent][config]") {
  auto h = help_text();
  for (const char* env :
       {"CNI_AGENT_RUN_DIR", "ZTUNNEL_UDS_ADDRESS", "EXCLUDE_NAMESPACES", "AMBIENT_DNS_CAPTURE",
        "AMBIENT_IPV6", "AMBIENT_HOST_ROOT", "AMBIENT_ENROLL_NAMESPACES", "AMBIENT_HEALTH_PORT"}) {
    CHECK_THAT(h, Catch::Contains(env));
  }
}

TEST_CASE("typed settings: install mode and the forced iptables variant", "[agent][config]") {
  const char* argv[] = {"ambient-agent"};
  auto r = parse_config(1, argv,
                        env_of({{"AMBIENT_ENROLL_NAMESPACES", "*"},
                                {"AMBIENT_INSTALL_CNI", "True"},
                                {"FORCE_IPTABLES_BINARY", "legacy"}}));
  REQUIRE(r);
  CHECK(r->config.install_cni == InstallCni::On);
  CHECK(r->config.installer_enabled());
  CHECK(r->config.force_iptables == ambient::redirect::IptablesVariant::Legacy);
  auto d = parse_config(1, argv, env_of({{"AMBIENT_ENROLL_NAMESPACES", "*"}}));
  REQUIRE(d);
  CHECK(d->config.install_cni == InstallCni::Auto);
  CHECK_FALSE(d->config.installer_enabled());  // auto: standalone mode installs nothing
  CHECK_FALSE(d->config.force_iptables);
}

TEST_CASE("--help shows each default from the Config it applies", "[agent][config]") {
  const Config defaults;
  const auto h = help_text();
  CHECK_THAT(h, Catch::Contains("default " + defaults.run_dir));
  CHECK_THAT(h, Catch::Contains("default " + defaults.probe_snat_ipv4));
  CHECK_THAT(h, Catch::Contains("default " + defaults.istio_owned_cni_config_filename));
  CHECK_THAT(h, Catch::Contains("default auto"));
  // An empty default shows none.
  CHECK_THAT(h, !Catch::Contains("default \n"));
}

TEST_CASE("the chart's ISTIO_OWNED_CNI_CONF_FILENAME is read, the option's own name wins",
          "[agent][config]") {
  const char* argv[] = {"ambient-agent"};
  auto chart = parse_config(1, argv,
                            env_of({{"AMBIENT_ENROLL_NAMESPACES", "*"},
                                    {"ISTIO_OWNED_CNI_CONF_FILENAME", "05-chart.conflist"}}));
  REQUIRE(chart);
  CHECK(chart->config.istio_owned_cni_config_filename == "05-chart.conflist");
  auto both = parse_config(1, argv,
                           env_of({{"AMBIENT_ENROLL_NAMESPACES", "*"},
                                   {"ISTIO_OWNED_CNI_CONF_FILENAME", "05-chart.conflist"},
                                   {"ISTIO_OWNED_CNI_CONFIG_FILENAME", "07-own.conflist"}}));
  REQUIRE(both);
  CHECK(both->config.istio_owned_cni_config_filename == "07-own.conflist");
}

TEST_CASE("the agent answers --version and `version`; AMBIENT_ENABLED=false is refused",
          "[agent][config]") {
  for (const char* arg : {"--version", "version"}) {
    const char* argv[] = {"ambient-agent", arg};
    auto r = parse_config(2, argv, env_of({}));
    REQUIRE(r);
    CHECK(r->version);
  }
  const char* argv[] = {"ambient-agent"};
  auto off = parse_config(
      1, argv, env_of({{"AMBIENT_ENROLL_NAMESPACES", "*"}, {"AMBIENT_ENABLED", "false"}}));
  REQUIRE_FALSE(off);
  CHECK_THAT(off.error().describe(), Catch::Contains("AMBIENT_ENABLED=false"));
  auto on = parse_config(1, argv,
                         env_of({{"AMBIENT_ENROLL_NAMESPACES", "*"}, {"AMBIENT_ENABLED", "true"}}));
  CHECK(on);
}

TEST_CASE("per-pod override annotations", "[agent][config]") {
  Config cfg;
  cfg.dns_capture = true;
  auto c = pod_redirect_config(cfg, {{"ambient.istio.io/dns-capture", "false"},
                                     {"ambient.istio.io/bypass-inbound-capture", "True"},
                                     {"istio.io/reroute-virtual-interfaces", "en0ps1, en1ps1,,"}});
  CHECK_FALSE(c.dns_capture);
  CHECK(c.ingress_mode);
  CHECK(c.virtual_interfaces == std::vector<std::string>{"en0ps1", "en1ps1"});
  // Invalid values are ignored: the global setting stays.
  auto bad = pod_redirect_config(cfg, {{"ambient.istio.io/dns-capture", "yes please"},
                                       {"ambient.istio.io/bypass-inbound-capture", "nope"}});
  CHECK(bad.dns_capture);
  CHECK_FALSE(bad.ingress_mode);
  cfg.dns_capture = false;
  CHECK(pod_redirect_config(cfg, {{"ambient.istio.io/dns-capture", "1"}}).dns_capture);
}

TEST_CASE("integer settings take Go's base prefixes (KUBECONFIG_MODE=0600)", "[agent][config]") {
  const char* argv[] = {"ambient-agent"};
  for (auto [text, want] : std::vector<std::pair<std::string, int>>{
           {"0600", 0600}, {"384", 384}, {"0o640", 0640}, {"0x180", 0x180}}) {
    auto r = parse_config(1, argv,
                          env_of({{"KUBECONFIG_MODE", text}, {"AMBIENT_ENROLL_NAMESPACES", "*"}}));
    REQUIRE(r);
    CHECK(r->config.kubeconfig_mode == want);
  }
}
