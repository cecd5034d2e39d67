// Who gets enrolled on the CNI path, and who hears about enrollments.
// Standalone: by namespace, from a flag (no Kubernetes). Kubernetes:
// upstream's selectors over the informer cache (k8s/controller.h).
#pragma once

#include <future>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lib/cni_event.h"
#include "lib/ip_address.h"
#include "lib/result.h"
#include "zds/zds_server.h"

namespace ambient::agent {

// What ztunnel and our cache know a pod by.
struct PodIdentity {
  std::string uid;
  zds::WorkloadInfo info;
  std::vector<IpAddress> ips;                      // go into the host's probe set
  std::map<std::string, std::string> annotations;  // per-pod redirection overrides
  std::string container_id;                        // the sandbox being enrolled, if known
  std::string name() const { return info.ns + "/" + info.name; }
};

class EnrollmentPolicy {
 public:
  virtual ~EnrollmentPolicy() = default;
  // nullopt: not to be enrolled (200, no rules). An error: cannot decide.
  virtual Result<std::optional<PodIdentity>> decide(const cni::CniEvent& ev) const = 0;
};

class StandalonePolicy : public EnrollmentPolicy {
 public:
  StandalonePolicy(std::vector<std::string> enroll, std::vector<std::string> exclude)
      : enroll_(std::move(enroll)), exclude_(std::move(exclude)) {}
  Result<std::optional<PodIdentity>> decide(const cni::CniEvent& ev) const override;

 private:
  std::vector<std::string> enroll_, exclude_;
};

// Marks pods enrolled where the cluster sees it: the Kubernetes controller
// writes the redirection annotation (docs/node-agent.md#annotations).
// istiod treats a pod as captured only once it is marked, so the agent
// starts the mark with the rules and the ZDS Add and enrolls the pod only
// once all three are done.
class EnrollmentListener {
 public:
  virtual ~EnrollmentListener() = default;
  // Starts marking `pod` enrolled and returns at once. The future is ready
  // when the mark is in place, or with an error once it could not be made
  // within a bounded time; it must be waited for.
  virtual std::future<Result<>> mark_enrolled(const PodIdentity& pod) = 0;
  // The enrollment failed after mark_enrolled() succeeded: put the mark
  // back to what the pod had before.
  virtual void unmark_failed(const PodIdentity& pod) = 0;
  // A CNI DEL took the pod's enrolled sandbox away while the pod itself may
  // live on (a sandbox that failed after our ADD, or one the runtime
  // replaces): its mark must not tell istiod it is captured. Returns at
  // once (docs/node-agent.md#removal).
  virtual void sandbox_removed(const std::string& ns, const std::string& name) = 0;
};

// The pod's key: the Kubernetes UID when the plugin sent it, else the
// sandbox's container ID (a runtime without Kubernetes), else
// namespace/name (upstream plugins send neither).
std::string pod_key(const cni::CniEvent& ev);

}  // namespace ambient::agent
