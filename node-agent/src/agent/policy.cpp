#include "agent/policy.h"

#include <algorithm>

namespace ambient::agent {

std::string pod_key(const cni::CniEvent& ev) {
  if (!ev.pod_uid.empty()) return ev.pod_uid;
  if (!ev.container_id.empty()) return ev.container_id;
  return ev.pod_namespace + "/" + ev.pod_name;
}

Result<std::optional<PodIdentity>> StandalonePolicy::decide(const cni::CniEvent& ev) const {
  if (std::find(exclude_.begin(), exclude_.end(), ev.pod_namespace) != exclude_.end()) {
    return std::optional<PodIdentity>();
  }
  for (const auto& ns : enroll_) {
    if (ns == "*" || ns == ev.pod_namespace) {
      // Without Kubernetes there is no service account to read: ztunnel
      // matches workloads by name and namespace and gets "default".
      return std::optional<PodIdentity>(PodIdentity{
          .uid = pod_key(ev),
          .info = {.name = ev.pod_name, .ns = ev.pod_namespace, .service_account = "default"}});
    }
  }
  return std::optional<PodIdentity>();
}

}  // namespace ambient::agent
