// In-pod redirection with native nftables through libnftables: no process
// per pod, and each pod's three tables go in as one transaction, so a
// failure leaves nothing half-installed.
#pragma once

#include <string>

#include "redirect/backend.h"
#include "redirect/nft.h"

namespace ambient::redirect {

class NftablesBackend : public RedirectBackend {
 public:
  std::string_view name() const override { return "nftables"; }
  Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg) override;
  Result<VerifyReport> verify(const netns::Netns& ns, const PodRedirectConfig& cfg) const override;
  Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) override;

  // Appended to every install transaction, to prove a failing transaction
  // leaves nothing behind.
  void set_extra_commands_for_test(std::string text) { extra_for_test_ = std::move(text); }

 private:
  // What differs from the wanted rules in the calling thread's netns;
  // *any_ours (if given) tells whether any istio-ambient-* table exists.
  Result<std::vector<std::string>> problems_here(NftContext& ctx, const PodRedirectConfig& cfg,
                                                 bool* any_ours = nullptr) const;
  std::string extra_for_test_;
};

}  // namespace ambient::redirect
