// One interface per redirection mechanism (iptables, nftables, eBPF), so the
// mechanisms are interchangeable and run the same end-to-end suite.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/result.h"
#include "netns/netns.h"

namespace ambient::redirect {

// Marks, ports and addresses of the in-pod contract (spec redirection.md §1).
inline constexpr unsigned kInpodMark = 0x111;
inline constexpr unsigned kInpodMask = 0xfff;
inline constexpr unsigned kZtunnelMark = 1337;  // = 0x539, ztunnel's SO_MARK
inline constexpr int kRouteTable = 100;
inline constexpr int kRulePriority = 32764;
inline constexpr int kOutboundPort = 15001;
inline constexpr int kInboundPlaintextPort = 15006;
inline constexpr int kInboundHbonePort = 15008;
inline constexpr int kDnsPort = 15053;

// Everything that decides a pod's rule set: global settings plus the pod's
// override annotations.
struct PodRedirectConfig {
  bool dns_capture = false;
  bool ipv6 = false;
  bool ingress_mode = false;                    // ambient.istio.io/bypass-inbound-capture
  std::vector<std::string> virtual_interfaces;  // istio.io/reroute-virtual-interfaces
  std::string probe_snat_ipv4 = "169.254.7.127";
  std::string probe_snat_ipv6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";
};

struct VerifyReport {
  bool complete = false;              // every expected rule, route and ip rule present
  std::vector<std::string> problems;  // human-readable, one per finding
};

class RedirectBackend {
 public:
  virtual ~RedirectBackend() = default;
  virtual std::string_view name() const = 0;
  // Idempotent: correct state is left alone, partial state is completed or
  // rebuilt; on failure nothing of ours is left in the netns. `routed`, if
  // set, is called (on the netns worker) once the pod's routing is in place
  // and before its rules go in: the agent hands the netns to ztunnel there,
  // so ztunnel's set-up (it binds 127.0.0.1 in the netns) never overlaps
  // our route and fib-rule changes. With the Add sent before them, one
  // ztunnel bind failed with EADDRNOTAVAIL in a benchmark run; the cause
  // was not found and it did not reproduce. It may not be called when
  // nothing needed installing; the caller then hands the netns over after.
  virtual Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                           const std::function<void()>& routed = {}) = 0;
  virtual Result<VerifyReport> verify(const netns::Netns& ns,
                                      const PodRedirectConfig& cfg) const = 0;
  // Idempotent; succeeds when nothing is installed.
  virtual Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) = 0;
};

}  // namespace ambient::redirect
