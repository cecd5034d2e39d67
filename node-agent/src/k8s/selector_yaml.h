// AMBIENT_ENABLEMENT_SELECTOR, the enablement selectors as YAML, read
// apart from the controller so they can be tested and fuzzed on their own.
#pragma once

#include <string>
#include <vector>

#include "lib/json_fields.h"
#include "lib/k8s/enablement.h"
#include "lib/result.h"

namespace ambient::k8s {

// AMBIENT_ENABLEMENT_SELECTOR (YAML) -> JSON, as the installer writes it
// into the plugin's config.
Result<json::Json> selector_yaml_to_json(const std::string& yaml);

// AMBIENT_ENABLEMENT_SELECTOR (YAML) -> selectors.
Result<std::vector<EnablementSelector>> parse_selector_yaml(const std::string& yaml);

}  // namespace ambient::k8s
