#include "app/host_setup.h"

#include <chrono>
#include <thread>

#include "log/log.h"
#include "redirect/kubelet_uid.h"

namespace ambient::app {

Result<> setup_host(const agent::Config& cfg, redirect::HostRedirect& host) {
  redirect::HostProbeConfig hcfg{
      .ipv6 = cfg.ipv6, .snat_v4 = cfg.probe_snat_ipv4, .snat_v6 = cfg.probe_snat_ipv6};
  bool rules = true;
  if (cfg.kubelet_uid >= 0) {
    hcfg.kubelet_uid = static_cast<uid_t>(cfg.kubelet_uid);
  } else if (auto uid = redirect::find_kubelet_uid(cfg.host_root + "/proc")) {
    hcfg.kubelet_uid = *uid;
  } else {
    // Matching every host socket instead (upstream's --socket-exists) would
    // SNAT all host traffic to pods (docs/field-lessons.md#p12): no rule is
    // safer.
    log::warn("no kubelet process found ({}): no probe SNAT rule; set --kubelet-uid",
              uid.error().describe());
    rules = false;
  }
  Result<> last;
  for (int attempt = 0; attempt < 11; ++attempt) {
    if (attempt) std::this_thread::sleep_for(std::chrono::seconds(2));
    last = host.ensure_sets(cfg.ipv6);
    if (last) last = host.flush_sets();
    if (last && rules) last = host.install_rules(hcfg);
    if (last) {
      if (rules) log::info("host probe SNAT for UID {} via {}", hcfg.kubelet_uid, host.name());
      return {};
    }
    log::warn("host rules attempt {}: {}", attempt + 1, last.error().describe());
  }
  return last;
}

void teardown_host(redirect::HostRedirect& host) {
  if (auto r = host.remove_rules(); !r) log::warn("remove host rules: {}", r.error().describe());
  if (auto r = host.destroy_sets(); !r) log::warn("destroy probe sets: {}", r.error().describe());
}

}  // namespace ambient::app
