#include "kube_fallback.h"

#include <thread>

#include "lib/ip_address.h"
#include "lib/json_fields.h"
#include "lib/k8s/kubeconfig.h"

namespace ambient::cni {

Result<std::unique_ptr<KubeconfigApi>> KubeconfigApi::load(const std::string& path) {
  AMBIENT_ASSIGN_OR_RETURN(k8s::KubeConfig cfg, k8s::load_kubeconfig(path));
  AMBIENT_ASSIGN_OR_RETURN(k8s::KubeHttps https, k8s::KubeHttps::create(cfg, "istio-cni"));
  return std::unique_ptr<KubeconfigApi>(new KubeconfigApi(std::move(https)));
}

Result<HttpReply> KubeconfigApi::get(const std::string& path) {
  AMBIENT_ASSIGN_OR_RETURN(k8s::HttpResult r,
                           https_.request("GET", path, "", "", std::chrono::seconds(5)));
  return HttpReply{.status = static_cast<int>(r.status), .body = std::move(r.body)};
}

namespace {

Result<json::Json> get_object(KubeApi& api, const std::string& path) {
  AMBIENT_ASSIGN_OR_RETURN(HttpReply r, api.get(path));
  auto j = json::Json::parse(r.body, nullptr, false);
  if (r.status != 200) {
    std::string msg =
        !j.is_discarded() && j.is_object() && j.contains("message") && j["message"].is_string()
            ? j["message"].get<std::string>()
            : r.body.substr(0, 200);
    return make_error(r.status == 404 ? Errc::NotFound : Errc::Unavailable,
                      "GET " + path + ": HTTP " + std::to_string(r.status) + ": " + msg);
  }
  if (j.is_discarded() || !j.is_object()) {
    return make_error(Errc::Internal, "GET " + path + ": not a JSON object");
  }
  return j;
}

}  // namespace

Result<bool> is_ambient_pod(KubeApi& api, const std::string& ns, const std::string& name,
                            const std::vector<k8s::EnablementSelector>& selectors,
                            const DetectionOptions& opts) {
  const std::string ns_path = "/api/v1/namespaces/" + ns;
  const std::string pod_path = ns_path + "/pods/" + name;
  Error last = make_error(Errc::Internal, "no attempt made");
  for (int i = 0; i < opts.attempts; ++i) {
    if (i) {
      if (opts.sleep)
        opts.sleep(opts.backoff);
      else
        std::this_thread::sleep_for(opts.backoff);
    }
    auto pod = get_object(api, pod_path);
    if (!pod) {
      last = std::move(pod).error();
      continue;
    }
    auto nsobj = get_object(api, ns_path);
    if (!nsobj) {
      last = std::move(nsobj).error();
      continue;
    }
    return k8s::pod_matches(*pod, *nsobj, selectors);
  }
  return std::move(last).context("ambient detection for " + ns + "/" + name + " failed after " +
                                 std::to_string(opts.attempts) + " attempts");
}

}  // namespace ambient::cni
