#include "lib/k8s/kubeconfig.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "lib/ip_address.h"

namespace ambient::k8s {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Result<KubeConfig> load_kubeconfig(const std::string& path) {
  KubeConfig cfg;
  try {
    YAML::Node root = YAML::LoadFile(path);
    std::string current = root["current-context"] ? root["current-context"].as<std::string>() : "";
    auto find_named = [&](const char* list, const std::string& name) -> YAML::Node {
      for (const auto& item : root[list]) {
        if (name.empty() || item["name"].as<std::string>() == name) return item;
      }
      return YAML::Node();
    };
    YAML::Node ctx = find_named("contexts", current);
    std::string cluster_name, user_name;
    if (ctx && ctx["context"]) {
      cluster_name = ctx["context"]["cluster"].as<std::string>("");
      user_name = ctx["context"]["user"].as<std::string>("");
    }
    YAML::Node cluster = find_named("clusters", cluster_name)["cluster"];
    if (!cluster || !cluster["server"]) {
      return make_error(Errc::InvalidArgument, "kubeconfig " + path + ": no cluster server");
    }
    cfg.server = cluster["server"].as<std::string>();
    cfg.insecure = cluster["insecure-skip-tls-verify"].as<bool>(false);
    cfg.ca_file = cluster["certificate-authority"].as<std::string>("");
    if (auto d = cluster["certificate-authority-data"]) {
      auto pem = base64_decode(d.as<std::string>());
      if (!pem) return make_error(Errc::InvalidArgument, "kubeconfig " + path + ": bad CA data");
      cfg.ca_data = *pem;
    }
    if (YAML::Node user = find_named("users", user_name)["user"]) {
      cfg.token = user["token"].as<std::string>("");
      cfg.token_file = user["tokenFile"].as<std::string>("");
      for (auto [key, dst] : {std::pair{"client-certificate-data", &cfg.client_cert_data},
                              std::pair{"client-key-data", &cfg.client_key_data}}) {
        if (auto d = user[key]) {
          auto pem = base64_decode(d.as<std::string>());
          if (!pem) return make_error(Errc::InvalidArgument, "kubeconfig " + path + ": bad " + key);
          *dst = *pem;
        }
      }
      if (auto f = user["client-certificate"])
        cfg.client_cert_data = read_file(f.as<std::string>());
      if (auto f = user["client-key"]) cfg.client_key_data = read_file(f.as<std::string>());
    }
  } catch (const YAML::Exception& e) {
    return make_error(Errc::InvalidArgument, "kubeconfig " + path + ": " + e.what());
  }
  return cfg;
}

}  // namespace ambient::k8s
