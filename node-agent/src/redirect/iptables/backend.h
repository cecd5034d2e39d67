// In-pod redirection with iptables-restore, run inside the pod netns from a
// dedicated thread, each command in a sandbox mount namespace (one per
// thread, process.h). Checks read as little as they can: a new pod's netns
// is recognised in process and needs no iptables-save, and so is a pod
// whose rule set fingerprint (netfilter_state.h) equals that of our own
// restore in an empty netns.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "redirect/backend.h"
#include "redirect/iptables/rules.h"
#include "redirect/reference_cache.h"

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
  // A pod with exactly our rules of one family: how iptables-save renders
  // our lines, and the fingerprint of the whole netns (netfilter_state.h).
  struct Reference {
    std::string our_lines;
    std::string fingerprint;
  };
  Result<std::shared_ptr<const Reference>> reference(const PodRedirectConfig& cfg, bool v6) const;
  // `state`: the netns's iptables-save dump for that family.
  std::vector<std::string> check_rules(const PodRedirectConfig& cfg, bool v6,
                                       const std::string& state, const Reference& ref) const;
  // check_rules with the least reading: see the .cpp. `state` gets the
  // iptables-save dump when one was read.
  Result<std::vector<std::string>> problems_here(const PodRedirectConfig& cfg, bool v6,
                                                 std::optional<std::string>& state) const;
  // True when this netns certainly holds no rules of that family (a new
  // pod), known without an exec.
  bool untouched_here(bool v6) const;
  Result<std::string> fingerprint_here(bool v6) const;
  static std::vector<bool> families(const PodRedirectConfig& cfg);
  Result<> remove_here(bool v6) const;
  Result<> install_here(const PodRedirectConfig& cfg, const std::function<void()>& routed);

  IptablesOptions opts_;
  bool legacy_;
  std::string name_;
  // Per family and rule set (its restore text).
  mutable ReferenceCache<Reference> references_;
};

}  // namespace ambient::redirect
