// The in-pod nftables rule set (docs/redirection.md#nftables), generated as
// the exact transaction text upstream feeds to `nft -f -` (byte-identical to
// the nftables goldens), from the same decisions as the iptables list.
#pragma once

#include <string>
#include <vector>

#include "redirect/backend.h"

namespace ambient::redirect {

inline constexpr const char* kNftTables[] = {"istio-ambient-nat", "istio-ambient-mangle",
                                             "istio-ambient-raw"};

struct NftRule {
  std::string table;  // istio-ambient-nat, -mangle, -raw
  std::string chain;  // prerouting, output, istio-prerouting, istio-output
  std::string body;   // the rule text after the chain name
};

// Upstream's append order; IPv6 variants right after their IPv4 sibling.
std::vector<NftRule> inpod_nft_rules(const PodRedirectConfig& cfg);

// The upstream transaction text (golden).
std::string inpod_nft_text(const PodRedirectConfig& cfg);

// What we apply: the upstream text plus add+delete of every in-pod table
// the configuration does not use (so a stale raw table from an earlier
// DNS-on run cannot survive; docs/redirection.md#nftables-apply).
std::string inpod_nft_apply_text(const PodRedirectConfig& cfg);

// Removes all our in-pod tables; never fails for a missing table.
std::string inpod_nft_delete_text();

}  // namespace ambient::redirect
