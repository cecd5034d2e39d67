// The body of /cmdadd and /cmddel as the agent decodes it. Whatever decodes
// must encode into a body that decodes again: the plugin and the agent
// share the format.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lib/cni_event.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto ev = ambient::cni::decode_event(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!ev) return 0;
  auto again = ambient::cni::decode_event(ambient::cni::encode_event(*ev));
  if (!again) std::abort();  // an event we accepted could not be sent on
  return 0;
}
