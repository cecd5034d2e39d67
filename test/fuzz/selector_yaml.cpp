// AMBIENT_ENABLEMENT_SELECTOR as the agent reads it: into selectors (the
// agent's decision) and into JSON (what the installer writes for the plugin).
#include <cstddef>
#include <cstdint>
#include <string>

#include "k8s/selector_yaml.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  (void)ambient::k8s::parse_selector_yaml(yaml);
  (void)ambient::k8s::selector_yaml_to_json(yaml);
  return 0;
}
