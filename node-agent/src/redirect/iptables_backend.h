// In-pod redirection with iptables-restore, run inside the pod netns from a
// dedicated thread, each command in a sandbox mount namespace (one per
// thread, process.h). With iptables-nft, a netns without nf_tables tables
// (a new pod) is recognised in process and needs no iptables-save.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "redirect/backend.h"
#include "redirect/iptables_rules.h"

namespace ambient::redirect {

struct IptablesOptions {
  // Binary family: "iptables" (the host's default alternative),
  // "iptables-legacy" or "iptables-nft"; ip6tables is derived from it.
  std::string family = "iptables";
  bool sandbox = true;  // AMBIENT_USE_SCOPED_XTABLES_LOCKING
};

class IptablesBackend : public RedirectBackend {
 public:
  // Reads `<family>-save --version` once (it creates nothing) to learn
  // whether the binaries are legacy, which take the xtables lock.
  static Result<std::unique_ptr<IptablesBackend>> create(IptablesOptions opts);

  std::string_view name() const override { return name_; }
  Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                   const std::function<void()>& routed = {}) override;
  Result<VerifyReport> verify(const netns::Netns& ns, const PodRedirectConfig& cfg) const override;
  Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) override;

 private:
  IptablesBackend(IptablesOptions opts, bool legacy);
  std::string bin(bool v6, std::string_view suffix) const;
  Result<std::string> save(bool v6) const;
  Result<> restore(bool v6, const std::string& text) const;
  // `state`: the netns's iptables-save dump for that family.
  Result<std::vector<std::string>> check_rules(const PodRedirectConfig& cfg, bool v6,
                                               const std::string& state) const;
  Result<> remove_here(bool v6) const;
  Result<> install_here(const PodRedirectConfig& cfg, const std::function<void()>& routed);

  IptablesOptions opts_;
  bool legacy_;
  std::string name_;
  // Verified iptables-save rendering per rule set (see check_rules).
  mutable std::mutex reference_mu_;
  mutable std::map<std::string, std::string> reference_;
};

}  // namespace ambient::redirect
