// Istio's --log_output_level strings as the agent parses them.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "log/log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)ambient::log::parse_output_levels(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
