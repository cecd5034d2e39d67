#include "netconf.h"

namespace ambient::cni {

namespace {
constexpr std::string_view kWhere = "network configuration";

Result<> check_label_selector(const json::Json& sel, const std::string& where) {
  if (!sel.is_object()) return json::type_error(where, "an object", sel, kWhere);
  if (const auto* ml = json::find(sel, "matchLabels")) {
    if (!ml->is_object()) return json::type_error(where + ".matchLabels", "an object", *ml, kWhere);
    for (auto it = ml->begin(); it != ml->end(); ++it) {
      if (!it->is_string()) {
        return json::type_error(where + ".matchLabels." + it.key(), "a string", *it, kWhere);
      }
    }
  }
  if (const auto* me = json::find(sel, "matchExpressions")) {
    if (!me->is_array()) {
      return json::type_error(where + ".matchExpressions", "an array", *me, kWhere);
    }
    for (size_t i = 0; i < me->size(); ++i) {
      std::string w = where + ".matchExpressions[" + std::to_string(i) + "]";
      const auto& expr = (*me)[i];
      if (!expr.is_object()) return json::type_error(w, "an object", expr, kWhere);
      std::string key, op;
      std::vector<std::string> values;
      AMBIENT_RETURN_IF_ERROR(json::read(expr, "key", key, w));
      AMBIENT_RETURN_IF_ERROR(json::read(expr, "operator", op, w));
      AMBIENT_RETURN_IF_ERROR(json::read(expr, "values", values, w));
    }
  }
  return {};
}

}  // namespace

Result<json::Json> parse_stdin(std::string_view stdin_data) {
  auto doc = json::parse(stdin_data);
  if (!doc) return std::move(doc).error().context("error unmarshaling network configuration");
  if (!doc->is_object()) {
    return make_error(
        Errc::InvalidArgument,
        std::string("network configuration must be a JSON object, got ") + json::type_name(*doc));
  }
  return doc;
}

Result<PluginConf> parse_conf(const json::Json& doc) {
  PluginConf c;
  auto parse = [&]() -> Result<> {
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "cniVersion", c.cni_version, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "name", c.name, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "type", c.type, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read_object(doc, "prevResult", c.prev_result, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "plugin_log_level", c.plugin_log_level, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "cni_agent_run_dir", c.cni_agent_run_dir, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "ambient_enabled", c.ambient_enabled, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "exclude_namespaces", c.exclude_namespaces, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "pod_namespace", c.pod_namespace, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "native_nftables", c.native_nftables, kWhere));
    AMBIENT_RETURN_IF_ERROR(json::read(doc, "enable_ambient_detection_retry",
                                       c.enable_ambient_detection_retry, kWhere));
    if (const auto* sels = json::find(doc, "enablement_selectors")) {
      if (!sels->is_array()) {
        return json::type_error("enablement_selectors", "an array", *sels, kWhere);
      }
      for (size_t i = 0; i < sels->size(); ++i) {
        const auto& s = (*sels)[i];
        std::string w = "enablement_selectors[" + std::to_string(i) + "]";
        if (!s.is_object()) return json::type_error(w, "an object", s, kWhere);
        for (const char* part : {"podSelector", "namespaceSelector"}) {
          if (const auto* sel = json::find(s, part)) {
            AMBIENT_RETURN_IF_ERROR(check_label_selector(*sel, w + "." + part));
          }
        }
      }
      c.enablement_selectors = *sels;
    }
    return {};
  };
  if (auto r = parse(); !r)
    return std::move(r).error().context("failed to parse network configuration");
  return c;
}

}  // namespace ambient::cni
