// A pod's redirection settings: the agent's global settings plus the pod's
// override annotations (docs/redirection.md#overrides).
#pragma once

#include <map>
#include <string>

#include "config/config.h"
#include "redirect/backend.h"

namespace ambient::agent {

// ambient.istio.io/bypass-inbound-capture, ambient.istio.io/dns-capture and
// istio.io/reroute-virtual-interfaces override the global settings; invalid
// values are ignored with a warning naming `pod`.
redirect::PodRedirectConfig pod_redirect_config(
    const Config& cfg, const std::map<std::string, std::string>& annotations,
    const std::string& pod = "");

}  // namespace ambient::agent
