#include "install/cni_config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ambient::install {

namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool valid_conflist(const Json& j) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return false;
  if (j.contains("cniVersion") && !j["cniVersion"].is_string()) return false;
  if (!j.contains("plugins")) return false;  // "has no networks"
  const auto& p = j["plugins"];
  if (!p.is_array() || p.empty()) return false;
  for (const auto& e : p) {
    if (!e.is_object() || !e.contains("type") || !e["type"].is_string() ||
        e["type"].get<std::string>().empty()) {
      return false;
    }
  }
  return true;
}

bool valid_conf(const Json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() &&
         !j["type"].get<std::string>().empty();
}

// Compared as JSON values, so a `type` that is not a string is simply not
// ours (value<std::string>() would throw on it).
bool is_istio_entry(const Json& plugin) {
  if (!plugin.is_object()) return false;
  auto t = plugin.find("type");
  return t != plugin.end() && *t == "istio-cni";
}

}  // namespace

Result<std::vector<std::string>> valid_config_files(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    auto ext = e.path().extension().string();
    if (ext == ".conf" || ext == ".conflist") names.push_back(e.path().string());
  }
  if (ec) return make_error(Errc::NotFound, "read " + dir + ": " + ec.message());
  if (names.empty()) return make_error(Errc::NotFound, "no networks found in " + dir);
  std::sort(names.begin(), names.end());
  std::vector<std::string> valid;
  for (const auto& n : names) {
    auto j = Json::parse(slurp(n), nullptr, false);
    if (j.is_discarded()) continue;
    bool ok =
        n.size() > 9 && n.substr(n.size() - 9) == ".conflist" ? valid_conflist(j) : valid_conf(j);
    if (ok) valid.push_back(n);
  }
  if (valid.empty()) return make_error(Errc::NotFound, "no valid networks found in " + dir);
  return valid;
}

std::string go_escapes(const std::string& dumped) {
  // Outside strings none of these bytes can occur, so the whole text is
  // scanned.
  std::string out;
  out.reserve(dumped.size());
  for (size_t i = 0; i < dumped.size(); ++i) {
    const char c = dumped[i];
    if (c == '&') {
      out += "\\u0026";
    } else if (c == '<') {
      out += "\\u003c";
    } else if (c == '>') {
      out += "\\u003e";
    } else if (c == '\xE2' && dumped.compare(i, 3, "\xE2\x80\xA8") == 0) {
      out += "\\u2028";
      i += 2;
    } else if (c == '\xE2' && dumped.compare(i, 3, "\xE2\x80\xA9") == 0) {
      out += "\\u2029";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

std::string go_json(const Json& j) { return go_escapes(j.dump(2)) + "\n"; }

Result<std::string> insert_entry(const std::string& existing, const Json& entry_in) {
  if (!entry_in.is_object()) {
    return make_error(Errc::InvalidArgument, "Istio CNI config is not a JSON object");
  }
  Json entry = entry_in;
  entry.erase("cniVersion");
  auto j = Json::parse(existing, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return make_error(Errc::InvalidArgument, "primary CNI config is not a JSON object");
  }
  if (j.contains("type")) {
    j.erase("cniVersion");
    Json wrapped = {{"cniVersion", "0.3.1"}, {"name", "k8s-pod-network"}};
    wrapped["plugins"] = Json::array({j, entry});
    return go_json(wrapped);
  }
  if (!j.contains("plugins") || !j["plugins"].is_array()) {
    return make_error(Errc::InvalidArgument, "primary CNI config has no plugins list");
  }
  auto& plugins = j["plugins"];
  // As upstream: entries are checked up to the istio-cni one that is
  // replaced; whatever follows it is kept as it is.
  for (auto it = plugins.begin(); it != plugins.end(); ++it) {
    if (!it->is_object()) {
      return make_error(Errc::InvalidArgument,
                        "primary CNI config has a plugin that is not an object");
    }
    if (is_istio_entry(*it)) {
      plugins.erase(it);
      break;
    }
  }
  plugins.push_back(entry);
  return go_json(j);
}

Result<std::string> remove_entry(const std::string& existing) {
  auto j = Json::parse(existing, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("plugins") || !j["plugins"].is_array()) {
    return make_error(Errc::InvalidArgument, "not a conflist");
  }
  auto& plugins = j["plugins"];
  for (auto it = plugins.begin(); it != plugins.end(); ++it) {
    if (is_istio_entry(*it)) {
      plugins.erase(it);
      break;
    }
  }
  return go_json(j);
}

bool has_entry(const std::string& conflist, const Json& entry_in) {
  Json entry = entry_in;
  entry.erase("cniVersion");
  auto j = Json::parse(conflist, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("plugins") || !j["plugins"].is_array()) {
    return false;
  }
  for (const auto& p : j["plugins"]) {
    if (is_istio_entry(p)) return p == entry;
  }
  return false;
}

}  // namespace ambient::install
