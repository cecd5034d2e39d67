// What the kernel's packet filter holds in the calling thread's netns, read
// in process (no iptables-save exec, no libnftables parse): call these from
// a netns worker (netns::run_in_netns).
//
// A fingerprint is a byte string that is equal for two netns exactly when
// their rule sets are equal: every table, chain and rule in the kernel's
// order, as the kernel reports them, with what differs between equal rule
// sets taken out (handles, positions, packet and byte counters). It is not
// meant to be read; the agent compares one to the fingerprint of a netns
// whose rules it has verified (redirect/iptables/backend.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "lib/result.h"
#include "redirect/backend.h"

namespace ambient::redirect {

// How many nf_tables tables the netns holds, any family: one netlink dump,
// without libnftables (no cache fill, no lock, and no parsing of rules,
// which for iptables-nft's xt expressions leaks in libnftables 1.0.6).
// Zero means a netns with no nftables state at all.
Result<size_t> count_tables_here();

// nf_tables state of one table family (NFPROTO_IPV4 and _IPV6 hold
// iptables-nft's rules; NFPROTO_UNSPEC: all families): tables, chains and
// rules, each rebuilt by libnftnl from the kernel's dump without handle,
// position or counter values. Sets and their elements are not in it: two
// rule sets with equal fingerprints may differ in what their set lookups
// match, so compare only with a reference whose rules use no sets.
Result<std::string> nf_tables_fingerprint_here(uint8_t family);

// Whether any legacy xtables table (ip_tables; IpFamily::V6: ip6_tables)
// exists here. The kernel creates a netns's tables on first use, and neither
// reading nor our checks use them, so a new pod has none.
Result<bool> xtables_legacy_in_use_here(IpFamily ip);

// Legacy xtables state (every table in /proc/net/ip_tables_names; V6:
// ip6_tables_names), read with libiptc: per table, each chain's name and
// policy and each rule's entry with its counters zeroed.
Result<std::string> xtables_legacy_fingerprint_here(IpFamily ip);

}  // namespace ambient::redirect
