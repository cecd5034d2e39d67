// The in-pod routing state shared by every backend
// (docs/redirection.md#in-pod-routing): `local default dev lo table 100` and
// `fwmark 0x111/0xfff lookup 100`, so the app's replies on ztunnel's spoofed
// connections reach ztunnel's transparent sockets. Must be called from a
// thread inside the pod netns.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "lib/result.h"

namespace ambient::redirect {

// lo's net.ipv4.conf settings a backend depends on
// (docs/redirection.md#ebpf-state).
struct LoIpv4Conf {
  bool accept_local = false;
  bool route_localnet = false;
  bool operator==(const LoIpv4Conf&) const = default;
};

// Brings lo up (the route's device), sets `lo_conf` on it in the same
// request when given, then adds both routing objects.
Result<> add_inpod_routing(bool ipv6, const std::optional<LoIpv4Conf>& lo_conf = std::nullopt);
// lo's settings as the kernel reports them over netlink.
Result<LoIpv4Conf> read_lo_ipv4_conf();
// Sets them, leaving lo up or down as it is.
Result<> set_lo_ipv4_conf(const LoIpv4Conf& conf);
// Deletes both IP families' routing; missing objects are not an error.
Result<> remove_inpod_routing();
// Lists what is missing (empty: all present).
Result<std::vector<std::string>> check_inpod_routing(bool ipv6);
// False when the pod's lo has IPv6 disabled (then no v6 route can exist).
bool lo_ipv6_enabled();

}  // namespace ambient::redirect
