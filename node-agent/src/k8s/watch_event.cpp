#include "k8s/watch_event.h"

#include <cstdint>

namespace ambient::k8s {

namespace {

// obj[key] when obj is an object and the field is a string, else
// `fallback`. nlohmann's value() throws on a field of another type, and
// on an object that is not one: on the informer's thread that ended the
// agent (test/fuzz/k8s_watch).
std::string string_field(const json::Json& obj, const char* key, std::string fallback) {
  if (!obj.is_object()) return fallback;
  auto v = obj.find(key);
  return v != obj.end() && v->is_string() ? v->get<std::string>() : fallback;
}

// A Status object's HTTP code; 0 when absent or not an integer.
int64_t status_code(const json::Json& obj) {
  if (!obj.is_object()) return 0;
  auto v = obj.find("code");
  return v != obj.end() && v->is_number_integer() ? v->get<int64_t>() : 0;
}

}  // namespace

std::string meta_string(const json::Json& obj, const char* key) {
  auto md = obj.find("metadata");
  if (md == obj.end() || !md->is_object()) return "";
  auto v = md->find(key);
  return v != md->end() && v->is_string() ? v->get<std::string>() : "";
}

Result<ListBody> parse_list_body(std::string_view body) {
  auto j = json::Json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.contains("items") || !j["items"].is_array()) {
    return make_error(Errc::Internal, "malformed list");
  }
  ListBody out;
  out.items.reserve(j["items"].size());
  for (auto& item : j["items"]) out.items.push_back(std::move(item));
  out.resource_version = meta_string(j, "resourceVersion");
  return out;
}

WatchLine parse_watch_line(std::string_view line) {
  WatchLine out;
  auto ev = json::Json::parse(line, nullptr, false);
  if (ev.is_discarded() || !ev.is_object()) {
    out.kind = WatchLine::Kind::Failure;
    out.failure = "malformed watch event";
    return out;
  }
  if (string_field(ev, "kind", "") == "Status") {  // an HTTP-level error body
    out.kind = WatchLine::Kind::Failure;
    out.gone = status_code(ev) == 410;
    out.failure = string_field(ev, "message", "watch failed");
    return out;
  }
  out.type = string_field(ev, "type", "");
  if (!ev.contains("object")) return out;  // Ignored
  auto obj = std::make_shared<const json::Json>(std::move(ev["object"]));
  if (out.type == "ERROR") {
    out.kind = WatchLine::Kind::Failure;
    out.gone = status_code(*obj) == 410;
    out.failure = string_field(*obj, "message", "watch error");
    return out;
  }
  out.kind = WatchLine::Kind::Object;
  out.resource_version = meta_string(*obj, "resourceVersion");
  out.object = std::move(obj);
  return out;
}

}  // namespace ambient::k8s
