// Host probe SNAT with libnftables: table `inet istio-ambient-nat` holds the
// sets `istio-inpod-probes-v4/-v6` and a `postrouting` nat chain. Every
// call is one nft transaction through one long-lived nft_ctx, made on the
// first call: callers are in the host netns (never inside run_in_netns).
// Reusing it keeps socket close, which waits for an RCU grace period after
// a commit, off every pod's enrollment (redirect/nftables/nft.h).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "redirect/host.h"
#include "redirect/nftables/nft.h"

namespace ambient::redirect {

class NftablesHostRedirect : public HostRedirect {
 public:
  NftablesHostRedirect();
  ~NftablesHostRedirect() override;
  std::string_view name() const override { return "nftables"; }
  // Adds the sets and replaces the chain's rules in one transaction
  // (`flush table` empties chains but keeps sets and their elements).
  Result<> install_rules(const HostProbeConfig& cfg) override;
  // Flushes and deletes the postrouting chain, so no nat hook is left
  // registered; the table and its sets stay.
  Result<> remove_rules() override;
  Result<> ensure_sets(bool ipv6) override;
  Result<> flush_sets() override;
  // Sets are table-local in nftables: this deletes the whole table, rules
  // included.
  Result<> destroy_sets() override;
  // Re-owning an existing element replaces its comment (add, delete, add in
  // one transaction); upstream's plain `add element` kept the old comment.
  Result<> add_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<> remove_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<std::vector<ProbeSetEntry>> list_sets() override;

 private:
  // What the table holds, from `list table` JSON: chain names, and each
  // set's elements (absent sets are missing from the map).
  struct TableState {
    bool exists = false;
    std::set<std::string> chains;
    std::map<std::string, std::vector<ProbeSetEntry>> sets;
  };
  class ElementCreator;
  Result<std::string> run_nft(const std::string& commands, bool json = false);
  Result<TableState> read_table();

  std::atomic<bool> ipv6_{false};
  std::mutex entries_mu_;  // see IptablesHostRedirect::entries_mu_
  std::mutex ctx_mu_;      // guards ctx_; taken inside entries_mu_
  std::optional<NftContext> ctx_;
  // IPs this process put in the sets (under entries_mu_): a hint that picks
  // the re-owning transaction over a `create` bound to fail. Elements made
  // by others are found by that failure.
  std::set<std::string> listed_;
  std::unique_ptr<ElementCreator> creator_;  // under entries_mu_
};

}  // namespace ambient::redirect
