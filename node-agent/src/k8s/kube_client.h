// The agent's Kubernetes API client: plain requests and line-streamed
// watches over the HTTPS client it shares with the plugin (kube_https.h:
// Beast and OpenSSL; the bearer token is re-read from its file on every
// request, so rotated service-account tokens keep working).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "lib/k8s/kube_https.h"
#include "lib/k8s/kubeconfig.h"
#include "lib/result.h"

namespace ambient::k8s {

// In-cluster: the API server kubelet announces (KUBERNETES_SERVICE_HOST and
// _PORT) and the service-account directory's token and CA.
Result<KubeConfig> in_cluster_config(
    const std::string& host, const std::string& port,
    const std::string& sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount");

class KubeClient {
 public:
  explicit KubeClient(KubeConfig cfg);
  ~KubeClient();
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  // A transport failure is an error; any HTTP status is a result.
  Result<HttpResult> request(std::string_view method, const std::string& path,
                             const std::string& body = "", std::string_view content_type = "",
                             std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

  // GET `path` and hand each complete line of the body to `on_line` until
  // the stream ends, `on_line` returns false, or `stop` becomes true. The
  // stream is abandoned when no byte arrives for `idle_timeout`.
  Result<long> stream_lines(const std::string& path,
                            const std::function<bool(std::string_view)>& on_line,
                            const std::atomic<bool>& stop,
                            std::chrono::seconds idle_timeout = std::chrono::seconds(90)) const;

  const KubeConfig& config() const { return cfg_; }

 private:
  KubeConfig cfg_;
  // The client, or why the config cannot make one (returned by every call).
  Result<KubeHttps> https_;
};

// Message from an API error body (a Status object), else the raw body.
std::string api_error_message(const HttpResult& r);

}  // namespace ambient::k8s
