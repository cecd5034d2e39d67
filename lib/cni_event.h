// The plugin -> agent event, POSTed as JSON to /cmdadd and /cmddel on the
// agent's Unix socket. The shape is upstream's (a Go struct without JSON
// tags, so capitalised keys, and net.IPNet's mask as base64 of raw bytes):
//   {"Netns":"/var/run/netns/x","PodName":"p","PodNamespace":"ns",
//    "IPs":[{"Interface":0,"Address":{"IP":"10.0.0.2","Mask":"////AA=="},"Gateway":"10.0.0.1"}]}
// We add PodUID, ContainerID and IfName; upstream agents ignore unknown keys.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/ip_address.h"
#include "lib/result.h"

namespace ambient::cni {

inline constexpr std::string_view kCmdAddPath = "/cmdadd";
inline constexpr std::string_view kCmdDelPath = "/cmddel";
inline constexpr std::string_view kPluginEventSocket = "pluginevent.sock";
// The plugin's log lines go to the agent as one POST of this path on this
// socket in the same run dir (docs/cni-plugin.md#log-channel).
inline constexpr std::string_view kPluginLogSocket = "log.sock";
inline constexpr std::string_view kPluginLogPath = "/log";
// The kubeconfig the agent's installer writes there for the plugin's API fallback.
inline constexpr std::string_view kPluginKubeconfigFile = "istio-cni-kubeconfig";

struct EventIp {
  std::optional<int> interface;
  IpPrefix address;  // decoded agent-side from IP + Mask; mask may be unknown
  std::optional<IpAddress> gateway;
};

struct CniEvent {
  std::string netns;
  std::string pod_name;
  std::string pod_namespace;
  std::vector<EventIp> ips;  // empty encodes as null, as upstream
  // Extensions of this project (absent from upstream plugins' events).
  std::string pod_uid;
  std::string container_id;
  std::string ifname;
};

std::string encode_event(const CniEvent& e);

// Decodes with Go semantics (case-insensitive keys, unknown keys ignored,
// trailing data rejected). Only Address.IP is required to make sense: an
// unparseable mask is tolerated, as upstream's agent ignores it.
Result<CniEvent> decode_event(std::string_view body);

}  // namespace ambient::cni
