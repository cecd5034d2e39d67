// The redirection backends by the names the agent's options and the tests
// use: the one list the tests run against, as in
// `opts.backend = GENERATE(from_range(kBackends));`.
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

namespace ambient::test {

inline const std::string kIptablesLegacy = "iptables-legacy";
inline const std::string kIptablesNft = "iptables-nft";
inline const std::string kNftables = "nftables";
// eBPF programs in pods; the host side on iptables-nft.
inline const std::string kEbpf = "ebpf";

// `all`, or those of its members AMBIENT_TEST_BACKENDS names (a comma list),
// to run a tier against one backend while working on it.
inline std::vector<std::string> selected_backends(std::vector<std::string> all) {
  const char* env = std::getenv("AMBIENT_TEST_BACKENDS");
  if (env == nullptr || *env == '\0') return all;
  const std::string wanted = std::string(",") + env + ",";
  std::erase_if(
      all, [&](const std::string& b) { return wanted.find("," + b + ",") == std::string::npos; });
  return all;
}

// Every in-pod backend.
inline const std::vector<std::string> kBackends =
    selected_backends({kIptablesLegacy, kIptablesNft, kNftables, kEbpf});
// The backends with netfilter rules (in pods, and every host side).
inline const std::vector<std::string> kNetfilterBackends =
    selected_backends({kIptablesLegacy, kIptablesNft, kNftables});
// The backends that program the kernel through nf_tables.
inline const std::vector<std::string> kNfTablesBackends = {kIptablesNft, kNftables};

}  // namespace ambient::test
