#include "app/host_setup.h"

#include <chrono>
#include <thread>

#include "log/log.h"
#include "redirect/kubelet_uid.h"

namespace ambient::app {

Result<std::string> setup_host(const agent::Config& cfg, redirect::HostRedirect& host) {
  redirect::HostProbeConfig hcfg{
      .ipv6 = cfg.ipv6, .snat_v4 = cfg.probe_snat_ipv4, .snat_v6 = cfg.probe_snat_ipv6};
  std::string detail;
  if (cfg.kubelet_uid >= 0) {
    hcfg.kubelet_uid = static_cast<uid_t>(cfg.kubelet_uid);
    detail = "connections of UID " + std::to_string(cfg.kubelet_uid) + " (--kubelet-uid)";
  } else if (auto uid = redirect::find_kubelet_uid(cfg.host_root + "/proc")) {
    hcfg.kubelet_uid = *uid;
    detail = "connections of kubelet's UID " + std::to_string(*uid);
  } else {
    // Upstream's match: every host socket, so some other host process's
    // connections to pods are SNATed too (docs/field-lessons.md#p12). Better
    // than no rule, which would send kubelet's probes to ztunnel.
    log::warn(
        "no kubelet process found ({}): the probe SNAT matches every host socket, as "
        "upstream's does; set --kubelet-uid to match kubelet's only",
        uid.error().describe());
    hcfg.match = redirect::ProbeMatch::SocketExists;
    detail = "any host socket (no kubelet process found; set --kubelet-uid)";
  }
  Result<> last;
  for (int attempt = 0; attempt < 11; ++attempt) {
    if (attempt) std::this_thread::sleep_for(std::chrono::seconds(2));
    last = host.ensure_sets(cfg.ipv6);
    if (last) last = host.flush_sets();
    if (last) last = host.install_rules(hcfg);
    if (last) {
      log::info("host probe SNAT via {}: {}", host.name(), detail);
      return detail;
    }
    log::warn("host rules attempt {}: {}", attempt + 1, last.error().describe());
  }
  return std::move(last).error();
}

void teardown_host(redirect::HostRedirect& host) {
  if (auto r = host.remove_rules(); !r) log::warn("remove host rules: {}", r.error().describe());
  if (auto r = host.destroy_sets(); !r) log::warn("destroy probe sets: {}", r.error().describe());
}

}  // namespace ambient::app
