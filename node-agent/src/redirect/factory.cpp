#include "redirect/factory.h"

#include "redirect/ebpf/backend.h"
#include "redirect/iptables/backend.h"
#include "redirect/iptables/host.h"
#include "redirect/nftables/backend.h"
#include "redirect/nftables/host.h"

namespace ambient::redirect {

namespace {

Result<Redirectors> netfilter(const Detection& detection, bool scoped_xtables_locking) {
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

}  // namespace

Result<Redirectors> make_redirectors(const Detection& detection, bool scoped_xtables_locking,
                                     std::shared_ptr<ebpf::Programs> programs) {
  AMBIENT_ASSIGN_OR_RETURN(Redirectors r, netfilter(detection, scoped_xtables_locking));
  if (!detection.ebpf) return r;
  if (!programs) return make_error(Errc::Internal, "eBPF chosen without loaded programs");
  // The pods eBPF cannot serve get the detected netfilter backend's rules.
  r.backend = std::make_unique<EbpfBackend>(std::move(programs), std::move(r.backend));
  return r;
}

}  // namespace ambient::redirect
