#include "agent/pod_config.h"

#include <optional>
#include <sstream>

#include "log/log.h"

namespace ambient::agent {

namespace {
// Go's strconv.ParseBool, as upstream reads these annotations.
std::optional<bool> parse_go_bool(const std::string& v) {
  for (const char* t : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (v == t) return true;
  }
  for (const char* f : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (v == f) return false;
  }
  return std::nullopt;
}
}  // namespace

redirect::PodRedirectConfig pod_redirect_config(const Config& cfg,
                                                const std::map<std::string, std::string>& ann,
                                                const std::string& pod) {
  redirect::PodRedirectConfig r{.dns_capture = cfg.dns_capture,
                                .ipv6 = cfg.ipv6,
                                .probe_snat_ipv4 = cfg.probe_snat_ipv4,
                                .probe_snat_ipv6 = cfg.probe_snat_ipv6};
  auto flag = [&](const char* key) -> std::optional<bool> {
    auto it = ann.find(key);
    if (it == ann.end()) return std::nullopt;
    auto b = parse_go_bool(it->second);
    if (!b) log::warn("pod {}: ignoring annotation {}=\"{}\": not a boolean", pod, key, it->second);
    return b;
  };
  if (auto b = flag("ambient.istio.io/bypass-inbound-capture")) r.ingress_mode = *b;
  if (auto b = flag("ambient.istio.io/dns-capture")) r.dns_capture = *b;
  if (auto it = ann.find("istio.io/reroute-virtual-interfaces"); it != ann.end()) {
    std::stringstream ss(it->second);
    std::string item;
    while (std::getline(ss, item, ',')) {
      auto b = item.find_first_not_of(" \t");
      auto e = item.find_last_not_of(" \t");
      if (b != std::string::npos) r.virtual_interfaces.push_back(item.substr(b, e - b + 1));
    }
  }
  return r;
}

}  // namespace ambient::agent
