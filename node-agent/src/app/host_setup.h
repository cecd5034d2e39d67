// The node side of kubelet's health probes: the probe sets, emptied at
// start, and the SNAT rule for kubelet's connections.
// docs/redirection.md#host-probe-snat
#pragma once

#include "config/config.h"
#include "redirect/host.h"

namespace ambient::app {

// Retried as upstream does (11 attempts, 2 s apart). Returns how the SNAT
// rule matches kubelet's connections, for /readyz.
Result<std::string> setup_host(const agent::Config& cfg, redirect::HostRedirect& host);

// Uninstall: the rules and the sets go; in-pod rules stay.
void teardown_host(redirect::HostRedirect& host);

}  // namespace ambient::app
