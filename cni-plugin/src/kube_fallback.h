// The plugin's own ambient decision, used only when the node agent cannot
// be reached (restart, upgrade, crash loop): upstream's isAmbientPod — GET
// the pod and its namespace with the installer's kubeconfig and apply the
// enablement selectors — so pods that are not ambient still start while
// ambient ones, and any the lookup cannot classify, fail closed
// (docs/cni-plugin.md#api-fallback). While the agent answers, no API call
// is made.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "agent_client.h"
#include "lib/k8s/enablement.h"
#include "lib/k8s/kube_https.h"
#include "lib/result.h"

namespace ambient::cni {

class KubeApi {
 public:
  virtual ~KubeApi() = default;
  // GET an API path; transport failures are errors, HTTP statuses are not.
  virtual Result<HttpReply> get(const std::string& path) = 0;
};

// HTTPS (kube_https.h; OpenSSL linked statically into the plugin) with the
// CA, token or client certificate of a kubeconfig file.
class KubeconfigApi : public KubeApi {
 public:
  static Result<std::unique_ptr<KubeconfigApi>> load(const std::string& path);
  Result<HttpReply> get(const std::string& path) override;

 private:
  explicit KubeconfigApi(k8s::KubeHttps https) : https_(std::move(https)) {}
  k8s::KubeHttps https_;
};

// Upstream isAmbientPod's schedule, so enable_ambient_detection_retry buys
// the same wait here as there: a constant 1 s back-off and 1 retry, or 30
// (its podRetrievalMaxRetries) with the flag.
inline constexpr int kDetectionRetries = 1;
inline constexpr int kDetectionRetriesLong = 30;
inline constexpr std::chrono::milliseconds kDetectionBackoff{1000};

struct DetectionOptions {
  int attempts = 1 + kDetectionRetries;
  std::chrono::milliseconds backoff = kDetectionBackoff;
  std::function<void(std::chrono::milliseconds)> sleep;  // unset = real sleep; tests inject
};

// true: ambient. An error: the pod or namespace could not be read.
Result<bool> is_ambient_pod(KubeApi& api, const std::string& ns, const std::string& name,
                            const std::vector<k8s::EnablementSelector>& selectors,
                            const DetectionOptions& opts);

}  // namespace ambient::cni
