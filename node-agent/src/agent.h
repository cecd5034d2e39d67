// The enrollment pipeline behind /cmdadd and /cmddel: decide, open the pod
// netns, install redirection, hand the netns to ztunnel, remember the pod.
// A pod is either fully enrolled (rules in place and ztunnel acked) or
// carries none of our rules: every failure after the install rolls it back.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cni_event.h"
#include "config.h"
#include "http_server.h"
#include "netns/netns.h"
#include "redirect/backend.h"
#include "zds/zds_server.h"

namespace ambient::agent {

// Who gets enrolled. Standalone: by namespace, from a flag (no Kubernetes).
class EnrollmentPolicy {
 public:
  virtual ~EnrollmentPolicy() = default;
  virtual bool should_enroll(const cni::CniEvent& ev) const = 0;
};

class StandalonePolicy : public EnrollmentPolicy {
 public:
  StandalonePolicy(std::vector<std::string> enroll, std::vector<std::string> exclude)
      : enroll_(std::move(enroll)), exclude_(std::move(exclude)) {}
  bool should_enroll(const cni::CniEvent& ev) const override;

 private:
  std::vector<std::string> enroll_, exclude_;
};

struct EnrolledPod {
  zds::Workload workload;
  redirect::PodRedirectConfig redirect;
};

// Enrolled pods by UID. Thread-safe.
class PodCache {
 public:
  void upsert(EnrolledPod p);
  std::optional<EnrolledPod> take(const std::string& uid);
  std::optional<EnrolledPod> get(const std::string& uid) const;
  std::vector<zds::Workload> workloads() const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, EnrolledPod> pods_;
};

struct Metrics {
  std::atomic<uint64_t> requests_200{0}, requests_400{0}, requests_500{0};
};

class Agent {
 public:
  Agent(const Config& cfg, redirect::RedirectBackend& backend, const EnrollmentPolicy& policy)
      : cfg_(cfg), backend_(backend), policy_(policy) {}

  void set_zds(zds::ZdsServer* zds) { zds_ = zds; }

  // HTTP handler for the plugin's socket (/cmdadd, /cmddel).
  http::Response handle_cni(const http::Request& req);

  Result<> cmd_add(const cni::CniEvent& ev);
  Result<> cmd_del(const cni::CniEvent& ev);

  std::vector<zds::Workload> snapshot() const { return cache_.workloads(); }
  const PodCache& cache() const { return cache_; }
  const Metrics& metrics() const { return metrics_; }

 private:
  std::mutex& pod_lock(const std::string& uid);
  redirect::PodRedirectConfig redirect_config() const;

  const Config& cfg_;
  redirect::RedirectBackend& backend_;
  const EnrollmentPolicy& policy_;
  zds::ZdsServer* zds_ = nullptr;
  PodCache cache_;
  Metrics metrics_;
  // Serialises work on one pod (a retried ADD racing a DEL) without
  // serialising different pods.
  std::array<std::mutex, 64> pod_locks_;
};

// The pod's key: the Kubernetes UID when the plugin sent it, else
// namespace/name (upstream plugins do not send the UID).
std::string pod_key(const cni::CniEvent& ev);

}  // namespace ambient::agent
