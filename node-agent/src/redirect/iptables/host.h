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
  // Reads `<family>-save --version` once to learn whether the binaries are
  // legacy (they take the xtables lock: --wait=30).
  static Result<std::unique_ptr<IptablesHostRedirect>> create(IptablesOptions opts);

  std::string_view name() const override { return name_; }
  Result<> install_rules(const HostProbeConfig& cfg) override;
  Result<> remove_rules() override;
  Result<> ensure_sets(bool ipv6) override;
  Result<> flush_sets() override;
  Result<> destroy_sets() override;
  Result<> add_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<> remove_pod_ip(const IpAddress& ip, const std::string& pod_uid) override;
  Result<std::vector<ProbeSetEntry>> list_sets() override;

 private:
  IptablesHostRedirect(IptablesOptions opts, bool legacy);
  std::string bin(bool v6, std::string_view suffix) const;
  Result<std::string> save_nat(bool v6) const;
  Result<> restore(bool v6, const std::string& text) const;
  Result<> remove_family(bool v6) const;

  IptablesOptions opts_;
  bool legacy_;
  std::string name_;
  std::atomic<bool> ipv6_{false};
  // Makes our own check-then-delete in remove_pod_ip atomic with respect to
  // add_pod_ip from other threads (another process can still interleave).
  std::mutex entries_mu_;
};

}  // namespace ambient::redirect
