// Builds the redirection objects for the backend detection chose: the
// in-pod backend and its host-side counterpart.
#pragma once

#include <memory>

#include "lib/result.h"
#include "redirect/backend.h"
#include "redirect/detect.h"
#include "redirect/ebpf/programs.h"
#include "redirect/host.h"

namespace ambient::redirect {

struct Redirectors {
  std::unique_ptr<RedirectBackend> backend;
  std::unique_ptr<HostRedirect> host;
};

// Builds the in-pod backend and the host side for the chosen backend: with
// Detection::ebpf, the eBPF backend over `programs` (the gate's, loaded) in
// pods and the netfilter kind's host side; an error without programs.
// `scoped_xtables_locking` (AMBIENT_USE_SCOPED_XTABLES_LOCKING) runs the
// iptables commands in a sandbox mount namespace. For an iptables kind the
// binaries are taken as Detection::iptables_probe found them (unset: as
// their name says); an error when that probe failed.
Result<Redirectors> make_redirectors(const Detection& detection, bool scoped_xtables_locking,
                                     std::shared_ptr<ebpf::Programs> programs = {});

}  // namespace ambient::redirect
