// In-pod redirection with native nftables through libnftables: no process
// per pod, and each pod's three tables go in as one transaction, so a
// failure leaves nothing half-installed.
#pragma once

#include <memory>
#include <string>

#include "redirect/backend.h"
#include "redirect/nftables/nft.h"
#include "redirect/reference_cache.h"

namespace ambient::redirect {

class NftablesBackend : public RedirectBackend {
 public:
  std::string_view name() const override { return "nftables"; }
  Result<> install(const netns::Netns& ns, const PodRedirectConfig& cfg,
                   const std::function<void()>& routed = {}) override;
  Result<VerifyReport> verify(const netns::Netns& ns, const PodRedirectConfig& cfg) const override;
  Result<> remove(const netns::Netns& ns, const PodRedirectConfig& cfg) override;

  // Appended to every install transaction, to prove a failing transaction
  // leaves nothing behind.
  void set_extra_commands_for_test(std::string text) { extra_for_test_ = std::move(text); }

 private:
  // What a pod with exactly our tables for a configuration holds: its
  // ruleset's fingerprint (netfilter_state.h), and our tables' stateless
  // listing.
  struct Reference {
    std::string fingerprint;
    std::string our_tables;
  };
  Result<std::shared_ptr<const Reference>> reference(const PodRedirectConfig& cfg) const;
  // Whether the calling thread's netns holds our tables for `cfg` and
  // nothing else, by fingerprint (netfilter_state.h). False when it cannot
  // tell (logged): the caller then reads the ruleset.
  bool exactly_ours_here(const PodRedirectConfig& cfg) const;
  // The calling thread's netns's ruleset as text, without counter values.
  static Result<std::string> list_here(NftContext& ctx);
  // How our tables in that listing differ from the wanted ones.
  Result<std::vector<std::string>> table_problems(NftContext& ctx, const std::string& listing,
                                                  const PodRedirectConfig& cfg) const;
  std::string extra_for_test_;
  // Our own transaction in an empty netns, by configuration (its nft text).
  mutable ReferenceCache<Reference> references_;
};

}  // namespace ambient::redirect
