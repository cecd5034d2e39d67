#include "redirect/factory.h"

#include "redirect/iptables/backend.h"
#include "redirect/iptables/host.h"
#include "redirect/nftables/backend.h"
#include "redirect/nftables/host.h"

namespace ambient::redirect {

Result<Redirectors> make_redirectors(const Detection& detection, bool scoped_xtables_locking) {
  const std::optional<IptablesVariant> variant = iptables_variant(detection.kind);
  if (!variant) {
    return Redirectors{.backend = std::make_unique<NftablesBackend>(),
                       .host = std::make_unique<NftablesHostRedirect>()};
  }
  IptablesOptions opts{.variant = *variant, .sandbox = scoped_xtables_locking};
  if (detection.iptables_probe) {
    const Result<IptablesVariant>& probe = *detection.iptables_probe;
    if (!probe) return Error(probe.error()).context("detect iptables variant");
    opts.actual = *probe;
  }
  return Redirectors{.backend = std::make_unique<IptablesBackend>(opts),
                     .host = std::make_unique<IptablesHostRedirect>(opts)};
}

}  // namespace ambient::redirect
