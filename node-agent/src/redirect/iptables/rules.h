// The in-pod iptables rule set, generated exactly as upstream does, and its
// iptables-restore text (byte-identical to the upstream goldens).
#pragma once

#include <string>
#include <vector>

#include "redirect/backend.h"

namespace ambient::redirect {

struct IptRule {
  std::string table;  // mangle, nat, raw
  std::string verb;   // -A
  std::string chain;  // PREROUTING, ISTIO_PRERT, ...
  std::vector<std::string> params;
};

// Rules in upstream's append order (docs/redirection.md#iptables-rules), for
// iptables (IpFamily::V4) or ip6tables (V6).
std::vector<IptRule> inpod_rules(const PodRedirectConfig& cfg, IpFamily ip);

// iptables-restore input for `rules` (docs/redirection.md#restore-text):
// tables sorted, chains declared in first-appearance order, then a second
// pass for -j targets.
std::string restore_text(const std::vector<IptRule>& rules);

// Restore text that deletes our jumps and ISTIO_* chains as found in an
// iptables-save dump; empty if there is nothing of ours.
std::string removal_text(const std::string& save_output);

}  // namespace ambient::redirect
