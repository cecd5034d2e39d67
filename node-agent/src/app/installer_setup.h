// What the installer writes onto the node, from the agent's configuration.
// docs/installer.md
#pragma once

#include "config/config.h"
#include "install/installer.h"

namespace ambient::app {

// Errors: an enablement selector that is not valid YAML.
Result<install::InstallerConfig> installer_config(const agent::Config& cfg);

}  // namespace ambient::app
