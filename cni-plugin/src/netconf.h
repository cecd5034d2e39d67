// The istio-cni entry of the network configuration (stdin), with every key
// upstream reads. See docs/cni-plugin.md#config-keys.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "lib/json_fields.h"
#include "lib/result.h"

namespace ambient::cni {

struct PluginConf {
  std::string cni_version;  // "" when absent (counts as 0.1.0)
  std::string name;
  std::string type;
  std::optional<json::Json> prev_result;
  std::string plugin_log_level;
  std::string cni_agent_run_dir;
  bool ambient_enabled = false;
  json::Json enablement_selectors = json::Json::array();  // validated; read by the API fallback
  std::vector<std::string> exclude_namespaces;
  std::string pod_namespace;
  bool native_nftables = false;
  bool enable_ambient_detection_retry = false;

  // The version the configuration speaks, with upstream's default.
  std::string effective_version() const { return cni_version.empty() ? "0.1.0" : cni_version; }
};

// Errors carry Errc::InvalidArgument; messages start with
// "failed to parse network configuration: ". Decode failures (not JSON)
// are reported separately by parse_stdin() so the dispatcher can map them
// to CNI code 6.
Result<json::Json> parse_stdin(std::string_view stdin_data);
Result<PluginConf> parse_conf(const json::Json& doc);

}  // namespace ambient::cni
