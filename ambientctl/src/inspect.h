// `ambientctl inspect`: a pod netns's redirection as the kernel holds it,
// read without the agent and without changing anything: nftables tables,
// iptables chains (legacy and nft), tc/BPF attachments, ip rules, route
// table 100, the sysctls the redirection depends on, and the listening
// sockets (ztunnel's among them) through NETLINK_SOCK_DIAG.
#pragma once

#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "lib/result.h"
#include "output.h"

namespace ambient::ctl {

// What inspect reads, as JSON with stable keys (docs/ambientctl.md#inspect).
// The path must be a network namespace (nsfs); anything else is refused
// before anything runs in it.
Result<nlohmann::json> inspect_json(const std::string& netns_path);
std::string inspect_table(const nlohmann::json& j);

// Prints it; the exit code (0, or 2 with the reason on `err`).
int inspect_netns(const std::string& netns_path, Format f, std::ostream& out, std::ostream& err);

}  // namespace ambient::ctl
