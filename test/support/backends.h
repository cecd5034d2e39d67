// The redirection backends by the names the agent's options and the tests
// use: the one list the tests run against, as in
// `opts.backend = GENERATE(from_range(kBackends));`.
#pragma once

#include <string>
#include <vector>

namespace ambient::test {

inline const std::string kIptablesLegacy = "iptables-legacy";
inline const std::string kIptablesNft = "iptables-nft";
inline const std::string kNftables = "nftables";

// Every backend.
inline const std::vector<std::string> kBackends = {kIptablesLegacy, kIptablesNft, kNftables};
// The backends that program the kernel through nf_tables.
inline const std::vector<std::string> kNfTablesBackends = {kIptablesNft, kNftables};

}  // namespace ambient::test
