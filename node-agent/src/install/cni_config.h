// The host's CNI configuration, edited exactly as upstream's installer does
// (docs/installer.md#cni-config): find the primary file, insert or
// remove the istio-cni entry, and write it back formatted like Go's
// json.MarshalIndent of a map (keys sorted, 2-space indent, HTML-escaped,
// trailing newline), atomically.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "install/safe_write.h"
#include "lib/json_fields.h"
#include "lib/result.h"

namespace ambient::install {

// Where ISTIO_OWNED_CNI_CONFIG puts the merged list unless told otherwise.
inline constexpr std::string_view kIstioOwnedConflist = "02-istio-cni.conflist";

using Json = nlohmann::json;  // std::map: keys come out sorted, as Go's maps do

// Valid .conf/.conflist files in `dir`, in the byte-wise order runtimes use.
Result<std::vector<std::string>> valid_config_files(const std::string& dir);

// Go's json.MarshalIndent(v, "", "  ") + "\n", including its escaping.
std::string go_json(const Json& j);

// `dumped` (nlohmann's output) with the escapes Go's encoder adds inside
// strings: &, <, > as \u0026, \u003c, \u003e, and U+2028, U+2029.
std::string go_escapes(const std::string& dumped);

// Inserts `entry` (its cniVersion dropped) at the end of a conflist's
// plugins, replacing an existing istio-cni entry; a single .conf is wrapped
// into {"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[...]}.
// Both must be JSON objects (docs/installer.md#insertion).
Result<std::string> insert_entry(const std::string& existing, const Json& entry);
// Removes the first istio-cni entry; other content stays as it is.
Result<std::string> remove_entry(const std::string& existing);
// True when the conflist has an istio-cni entry equal to `entry`.
bool has_entry(const std::string& conflist, const Json& entry);

}  // namespace ambient::install
