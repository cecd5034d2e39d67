#include "lib/json_fields.h"

#include <strings.h>

namespace ambient::json {

Result<Json> parse(std::string_view text) {
  // nlohmann only reports the failure position through its exception; this
  // is the one place it may throw, and it does not escape.
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return make_error(Errc::InvalidArgument, e.what());
  }
}

const Json* find(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  const Json* found = nullptr;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& k = it.key();
    if (k.size() == key.size() && ::strncasecmp(k.data(), key.data(), k.size()) == 0) {
      found = &it.value();
    }
  }
  if (found && found->is_null()) return nullptr;
  return found;
}

const char* type_name(const Json& v) {
  if (v.is_number()) return "number";
  return v.type_name();
}

Error type_error(std::string_view key, std::string_view want, const Json& got,
                 std::string_view where) {
  return make_error(Errc::InvalidArgument, std::string(where) + ": key \"" + std::string(key) +
                                               "\" must be " + std::string(want) + ", got " +
                                               type_name(got));
}

Result<> read(const Json& obj, std::string_view key, std::string& out, std::string_view where) {
  const Json* v = find(obj, key);
  if (!v) return {};
  if (!v->is_string()) return type_error(key, "a string", *v, where);
  out = v->get<std::string>();
  return {};
}

Result<> read(const Json& obj, std::string_view key, bool& out, std::string_view where) {
  const Json* v = find(obj, key);
  if (!v) return {};
  if (!v->is_boolean()) return type_error(key, "a boolean", *v, where);
  out = v->get<bool>();
  return {};
}

Result<> read(const Json& obj, std::string_view key, int64_t& out, std::string_view where) {
  const Json* v = find(obj, key);
  if (!v) return {};
  if (!v->is_number_integer()) return type_error(key, "an integer", *v, where);
  out = v->get<int64_t>();
  return {};
}

Result<> read(const Json& obj, std::string_view key, std::optional<int64_t>& out,
              std::string_view where) {
  int64_t tmp = 0;
  const Json* v = find(obj, key);
  if (!v) return {};
  AMBIENT_RETURN_IF_ERROR(read(obj, key, tmp, where));
  out = tmp;
  return {};
}

Result<> read(const Json& obj, std::string_view key, std::vector<std::string>& out,
              std::string_view where) {
  const Json* v = find(obj, key);
  if (!v) return {};
  if (!v->is_array()) return type_error(key, "an array of strings", *v, where);
  std::vector<std::string> items;
  for (const auto& item : *v) {
    if (!item.is_string()) return type_error(key, "an array of strings", item, where);
    items.push_back(item.get<std::string>());
  }
  out = std::move(items);
  return {};
}

Result<> read_object(const Json& obj, std::string_view key, std::optional<Json>& out,
                     std::string_view where) {
  const Json* v = find(obj, key);
  if (!v) return {};
  if (!v->is_object()) return type_error(key, "an object", *v, where);
  out = *v;
  return {};
}

}  // namespace ambient::json
