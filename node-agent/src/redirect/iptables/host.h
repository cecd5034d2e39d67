// Host probe SNAT with iptables-restore (nat table, chain ISTIO_POSTRT) and
// ipsets `istio-inpod-probes-v4/-v6` managed in-process through libipset.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "redirect/host.h"
#include "redirect/iptables/backend.h"

namespace ambient::redirect {

class IptablesHostRedirect : public HostRedirect {
 public:
  // Runs nothing: what the binaries are comes in `opts` (make_redirectors
  // in redirect/factory.h takes it from detection).
  explicit IptablesHostRedirect(IptablesOptions opts);

  std::string_view name() const override { return variant_name(opts_.actual); }
  Result<> install_rules(const HostProbeConfig& cfg) override;
  Result<> remove_rules() override;
  Result<> ensure_sets(bool ipv6) override;
  Result<> flush_sets() override;
  Result<> destroy_sets() override;
  Result<> add_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<> remove_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<std::vector<ProbeSetEntry>> list_sets() override;

 private:
  // Legacy binaries take the xtables lock: --wait=30.
  bool legacy() const { return opts_.actual == IptablesVariant::Legacy; }
  std::string bin(IpFamily ip, std::string_view tool) const;
  Result<std::string> save_nat(IpFamily ip) const;
  Result<> restore(IpFamily ip, const std::string& text) const;
  // Takes our rules of one IP family out of the nat table.
  Result<> remove_rules_of(IpFamily ip) const;

  IptablesOptions opts_;
  std::atomic<bool> ipv6_{false};
  // Makes our own check-then-delete in remove_pod_ip atomic with respect to
  // add_pod_ip from other threads (another process can still interleave).
  std::mutex entries_mu_;
};

}  // namespace ambient::redirect
