// Host probe SNAT with libnftables: table `inet istio-ambient-nat` holds the
// sets `istio-inpod-probes-v4/-v6` and a `postrouting` nat chain. Every
// call is one nft transaction run through a fresh nft_ctx made in the
// calling thread, so its netlink socket lives in that thread's netns.
#pragma once

#include <atomic>
#include <mutex>
#include <string>

#include "redirect/host.h"

namespace ambient::redirect {

class NftablesHostRedirect : public HostRedirect {
 public:
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
  std::atomic<bool> ipv6_{false};
  std::mutex entries_mu_;  // see IptablesHostRedirect::entries_mu_
};

}  // namespace ambient::redirect
