#include "k8s/selector_yaml.h"

#include <yaml-cpp/yaml.h>

namespace ambient::k8s {

namespace {

json::Json yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: {
      json::Json a = json::Json::array();
      for (const auto& e : n) a.push_back(yaml_to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json::Json o = json::Json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Scalar:
      return n.as<std::string>();
    default:
      return nullptr;
  }
}

}  // namespace

Result<json::Json> selector_yaml_to_json(const std::string& yaml) {
  if (yaml.find_first_not_of(" \t\r\n") == std::string::npos) return json::Json::array();
  try {
    return yaml_to_json(YAML::Load(yaml));
  } catch (const YAML::Exception& e) {
    return make_error(Errc::InvalidArgument,
                      std::string("failed to parse ambient enablement selector: ") + e.what());
  }
}

Result<std::vector<EnablementSelector>> parse_selector_yaml(const std::string& yaml) {
  if (yaml.find_first_not_of(" \t\r\n") == std::string::npos) {
    return std::vector<EnablementSelector>{};
  }
  json::Json j;
  try {
    j = yaml_to_json(YAML::Load(yaml));
  } catch (const YAML::Exception& e) {
    return make_error(Errc::InvalidArgument,
                      std::string("failed to parse ambient enablement selector: ") + e.what());
  }
  auto sel = parse_enablement_selectors(j);
  if (!sel) return std::move(sel).error().context("failed to parse ambient enablement selector");
  return sel;
}

}  // namespace ambient::k8s
