// Decoding JSON objects the way Go's encoding/json decodes into a struct:
// keys match case-insensitively, the last matching key wins, unknown keys
// are ignored, null leaves the default, and a wrong type is an error naming
// the key. Upstream's plugin and agent decode with Go, so ours must accept
// exactly what they accept.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lib/result.h"

namespace ambient::json {

using Json = nlohmann::ordered_json;

// Parses a whole document; trailing data is an error (as in Go).
Result<Json> parse(std::string_view text);

// The value of `key` in `obj` (case-insensitive, last match wins), or
// nullptr when absent or null.
const Json* find(const Json& obj, std::string_view key);

const char* type_name(const Json& v);

// Typed field readers. `where` names the enclosing object for messages,
// e.g. "network configuration". Absent or null leaves `out` untouched.
Result<> read(const Json& obj, std::string_view key, std::string& out, std::string_view where);
Result<> read(const Json& obj, std::string_view key, bool& out, std::string_view where);
Result<> read(const Json& obj, std::string_view key, int64_t& out, std::string_view where);
Result<> read(const Json& obj, std::string_view key, std::optional<int64_t>& out,
              std::string_view where);
Result<> read(const Json& obj, std::string_view key, std::vector<std::string>& out,
              std::string_view where);
// Requires an object (or null/absent) and copies it.
Result<> read_object(const Json& obj, std::string_view key, std::optional<Json>& out,
                     std::string_view where);

Error type_error(std::string_view key, std::string_view want, const Json& got,
                 std::string_view where);

}  // namespace ambient::json
