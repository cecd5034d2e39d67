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

// Marks, ports and addresses of the in-pod contract
// (docs/redirection.md#constants).
inline constexpr unsigned kInpodMark = 0x111;
inline constexpr unsigned kInpodMask = 0xfff;
inline constexpr unsigned kZtunnelMark = 1337;  // = 0x539, ztunnel's SO_MARK
inline constexpr int kRouteTable = 100;
inline constexpr int kRulePriority = 32764;
inline constexpr int kOutboundPort = 15001;
inline constexpr int kInboundPlaintextPort = 15006;
inline constexpr int kInboundHbonePort = 15008;
inline constexpr int kDnsPort = 15053;

// The default source addresses of SNATed kubelet probes (HOST_PROBE_SNAT_IP,
// HOST_PROBE_SNAT_IPV6): the in-pod rules let them past ztunnel.
inline constexpr std::string_view kDefaultProbeSnatIpv4 = "169.254.7.127";
inline constexpr std::string_view kDefaultProbeSnatIpv6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";

// An IP family: which addresses, and iptables or ip6tables.
enum class IpFamily { V4, V6 };
inline constexpr IpFamily kIpFamilies[] = {IpFamily::V4, IpFamily::V6};

// "ipv4" or "ipv6", as messages name it.
constexpr std::string_view ip_family_name(IpFamily ip) {
  return ip == IpFamily::V6 ? "ipv6" : "ipv4";
}

// Everything that decides a pod's rule set: global settings plus the pod's
// override annotations.
struct PodRedirectConfig {
  bool dns_capture = false;
  bool ipv6 = false;
  bool ingress_mode = false;                    // ambient.istio.io/bypass-inbound-capture
  std::vector<std::string> virtual_interfaces;  // istio.io/reroute-virtual-interfaces
  std::string probe_snat_ipv4 = std::string(kDefaultProbeSnatIpv4);
  std::string probe_snat_ipv6 = std::string(kDefaultProbeSnatIpv6);
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
  // rebuilt; on failure nothing of ours is left in the netns.
  // `routed`, if set, is called on the netns worker once the pod's routing
  // is in place and before its rules go in. The caller hands the netns to
  // ztunnel there, so ztunnel's set-up never overlaps the route and
  // fib-rule changes: the netns's first fib rule splits its merged local
  // and main tables (the kernel's fib_unmerge), and ztunnel's bind of
  // 127.0.0.1 racing that split can find the address missing. It may not
  // be called when nothing needed installing; the caller then hands the
  // netns over after install returns.
  virtual Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                           const std::function<void()>& routed = {}) = 0;
  virtual Result<VerifyReport> verify(const netns::Netns& ns,
                                      const PodRedirectConfig& cfg) const = 0;
  // Idempotent; succeeds when nothing is installed.
  virtual Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) = 0;
  // Called once ztunnel has acked the pod, so its listeners exist in the
  // netns: a backend whose capture depends on how ztunnel made them checks
  // them here and may change how it redirects this pod. An error fails the
  // enrollment as a failed install does. True: ztunnel's listeners suit
  // this backend as they are, which holds for every pod the same ztunnel
  // process serves (its settings are node-wide), so the caller may skip
  // the call for those.
  virtual Result<bool> ztunnel_ready(const netns::Netns& /*ns*/, const PodRedirectConfig& /*cfg*/) {
    return true;
  }
  // The mechanism that redirects this pod: name(), unless the backend moved
  // the pod to another.
  virtual std::string pod_backend(const netns::Netns& /*ns*/) const { return std::string(name()); }
};

}  // namespace ambient::redirect
