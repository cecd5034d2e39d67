#include "agent/pod_config.h"

#include <optional>

#include "lib/text.h"
#include "log/log.h"

namespace ambient::agent {

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
    auto b = text::parse_go_bool(it->second);
    if (!b) log::warn("pod {}: ignoring annotation {}=\"{}\": not a boolean", pod, key, it->second);
    return b;
  };
  if (auto b = flag("ambient.istio.io/bypass-inbound-capture")) r.ingress_mode = *b;
  if (auto b = flag("ambient.istio.io/dns-capture")) r.dns_capture = *b;
  if (auto it = ann.find("istio.io/reroute-virtual-interfaces"); it != ann.end()) {
    r.virtual_interfaces = text::split_list(it->second);
  }
  return r;
}

}  // namespace ambient::agent
