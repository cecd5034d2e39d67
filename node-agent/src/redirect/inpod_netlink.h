// The in-pod routing state shared by every backend
// (docs/redirection.md#in-pod-routing): `local default dev lo table 100` and
// `fwmark 0x111/0xfff lookup 100`, so the app's replies on ztunnel's spoofed
// connections reach ztunnel's transparent sockets. Must be called from a
// thread inside the pod netns.
#pragma once

#include <string>
#include <vector>

#include "lib/result.h"

namespace ambient::redirect {

Result<> add_inpod_routing(bool ipv6);
// Deletes both IP families' routing; missing objects are not an error.
Result<> remove_inpod_routing();
// Lists what is missing (empty: all present).
Result<std::vector<std::string>> check_inpod_routing(bool ipv6);
// False when the pod's lo has IPv6 disabled (then no v6 route can exist).
bool lo_ipv6_enabled();

}  // namespace ambient::redirect
