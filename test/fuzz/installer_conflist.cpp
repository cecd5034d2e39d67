// A primary CNI configuration as the installer finds it on the node: our
// entry inserted, checked for and removed, as on install, repair and
// uninstall.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "install/cni_config.h"

using namespace ambient::install;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // plugin_entry()'s output with the chart's defaults.
  static const Json entry = Json::parse(
      R"({"cniVersion":"0.3.1","name":"istio-cni","type":"istio-cni","ipam":{},"dns":{},)"
      R"("plugin_log_level":"info","cni_agent_run_dir":"/var/run/istio-cni",)"
      R"("ambient_enabled":true,"enablement_selectors":[],"exclude_namespaces":["kube-system"],)"
      R"("pod_namespace":"istio-system","native_nftables":false,)"
      R"("enable_ambient_detection_retry":false})");
  const std::string existing(reinterpret_cast<const char*>(data), size);
  (void)has_entry(existing, entry);
  (void)remove_entry(existing);
  auto merged = insert_entry(existing, entry);
  if (!merged) return 0;
  // Into a config with no istio-cni entry of its own (which the first
  // repair pass may leave in front of ours), what we wrote carries our
  // entry and loses it again on uninstall.
  if (existing.find("istio") != std::string::npos || existing.find('\\') != std::string::npos) {
    return 0;
  }
  if (!has_entry(*merged, entry)) std::abort();
  auto removed = remove_entry(*merged);
  if (!removed || has_entry(*removed, entry)) std::abort();
  return 0;
}
