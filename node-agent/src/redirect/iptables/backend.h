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
#include "redirect/iptables/variant.h"
#include "redirect/reference_cache.h"

namespace ambient::redirect {

struct IptablesOptions {
  // Which binaries run: iptables-legacy-save/-restore (and ip6tables-legacy-*)
  // or iptables-nft-*.
  IptablesVariant variant = IptablesVariant::Nft;
  // What those binaries are by `<bin>-save --version` (detection reads it:
  // Detection::iptables_probe): legacy ones take the xtables lock and keep
  // their rules in x_tables, nft ones in nf_tables. The same as `variant`
  // unless the host's binaries are misnamed.
  IptablesVariant actual = variant;
  bool sandbox = true;  // AMBIENT_USE_SCOPED_XTABLES_LOCKING
};

class IptablesBackend : public RedirectBackend {
 public:
  // Runs nothing: what the binaries are comes in `opts` (make_redirectors
  // in redirect/factory.h takes it from detection).
  explicit IptablesBackend(IptablesOptions opts);

  std::string_view name() const override { return variant_name(opts_.actual); }
  Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                   const std::function<void()>& routed = {}) override;
  Result<VerifyReport> verify(const netns::Netns& ns, const PodRedirectConfig& cfg) const override;
  Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) override;

 private:
  bool legacy() const { return opts_.actual == IptablesVariant::Legacy; }
  std::string bin(IpFamily ip, std::string_view tool) const;
  Result<std::string> save(IpFamily ip) const;
  Result<> restore(IpFamily ip, const std::string& text) const;
  // A pod with exactly our rules of one IP family: how iptables-save
  // renders our lines, and the fingerprint of the whole netns
  // (netfilter_state.h).
  struct Reference {
    std::string our_lines;
    std::string fingerprint;
  };
  Result<std::shared_ptr<const Reference>> reference(const PodRedirectConfig& cfg,
                                                     IpFamily ip) const;
  // `state`: the netns's iptables-save dump for that IP family.
  std::vector<std::string> check_rules(const PodRedirectConfig& cfg, IpFamily ip,
                                       const std::string& state, const Reference& ref) const;
  // check_rules with the least reading: see the .cpp. `state` gets the
  // iptables-save dump when one was read.
  Result<std::vector<std::string>> problems_here(const PodRedirectConfig& cfg, IpFamily ip,
                                                 std::optional<std::string>& state) const;
  // True when this netns certainly holds no rules of that IP family (a new
  // pod), known without an exec.
  bool untouched_here(IpFamily ip) const;
  Result<std::string> fingerprint_here(IpFamily ip) const;
  // The IP families the configuration redirects.
  static std::vector<IpFamily> ip_families(const PodRedirectConfig& cfg);
  Result<> remove_here(IpFamily ip) const;
  // One IP family's rules: left alone when exactly right, else rebuilt.
  Result<> install_rules_here(const PodRedirectConfig& cfg, IpFamily ip, bool untouched);
  Result<> install_here(const PodRedirectConfig& cfg, const std::function<void()>& routed);

  IptablesOptions opts_;
  // Per IP family and rule set (its restore text).
  mutable ReferenceCache<Reference> references_;
};

}  // namespace ambient::redirect
