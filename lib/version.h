// The project's version: one number for ambient-cni as a whole. The plugin
// prints it (`istio-cni --version`, the bare CNI invocation) and the node
// agent reports the same one. Header-only, so the static plugin links
// nothing more for it.
#pragma once

#include <string_view>

namespace ambient {

inline constexpr std::string_view kVersion = "0.1.0";

}  // namespace ambient
