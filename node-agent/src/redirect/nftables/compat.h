// Whether the host's `nft` binary can read what we write through
// libnftables (docs/redirection.md#host-nft-compat,
// docs/field-lessons.md#p24). Only warns: the agent never runs the binary
// itself, but people debugging a node do.
#pragma once

#include <string>

#include "lib/result.h"

namespace ambient::redirect {

// Applies a scratch ruleset with the constructs our nftables rules use,
// through libnftables, in a throwaway netns (a dedicated thread that
// unshares its network namespace; the host netns is never touched), then
// runs `<nft_binary> list ruleset` and `<nft_binary> -j list ruleset` from
// that thread. Returns a warning text (also logged) if the binary is
// missing, is killed by a signal, fails, or lists less than was written;
// "" if it reads everything. Errors are failures of the check itself (no
// CAP_SYS_ADMIN, libnftables cannot apply the scratch ruleset).
Result<std::string> check_host_nft_compat(const std::string& nft_binary = "nft");

}  // namespace ambient::redirect
