#include "k8s/kube_client.h"

#include "lib/ip_address.h"
#include "lib/json_fields.h"

namespace ambient::k8s {

Result<KubeConfig> in_cluster_config(const std::string& host, const std::string& port,
                                     const std::string& sa_dir) {
  if (host.empty() || port.empty()) {
    return make_error(
        Errc::NotFound,
        "not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset and no kubeconfig given");
  }
  const std::string h = host.find(':') == std::string::npos ? host : "[" + host + "]";
  KubeConfig cfg;
  cfg.server = "https://" + h + ":" + port;
  cfg.ca_file = sa_dir + "/ca.crt";
  cfg.token_file = sa_dir + "/token";
  return cfg;
}

KubeClient::KubeClient(KubeConfig cfg)
    : cfg_(std::move(cfg)), https_(KubeHttps::create(cfg_, "ambient-agent")) {}
KubeClient::~KubeClient() = default;

Result<HttpResult> KubeClient::request(std::string_view method, const std::string& path,
                                       const std::string& body, std::string_view content_type,
                                       std::chrono::milliseconds timeout) const {
  if (!https_) return https_.error();
  return https_->request(method, path, body, content_type, timeout);
}

Result<long> KubeClient::stream_lines(const std::string& path,
                                      const std::function<bool(std::string_view)>& on_line,
                                      const std::atomic<bool>& stop,
                                      std::chrono::seconds idle_timeout) const {
  if (!https_) return https_.error();
  return https_->stream_lines(path, on_line, stop, idle_timeout);
}

std::string api_error_message(const HttpResult& r) {
  auto j = json::Json::parse(r.body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("message") && j["message"].is_string()) {
    return "HTTP " + std::to_string(r.status) + ": " + j["message"].get<std::string>();
  }
  return "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200);
}

}  // namespace ambient::k8s
