// The enrollment pipeline behind /cmdadd and /cmddel: decide, open the pod
// netns, hand it to ztunnel and install redirection meanwhile, add the pod's
// IPs to the host's probe set, remember the pod.
// A pod is either fully enrolled (rules in place and ztunnel acked) or
// carries none of our rules: every failure after the install rolls it back.
#pragma once

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "http/server.h"
#include "lib/cni_event.h"
#include "metrics/histogram.h"
#include "netns/netns.h"
#include "redirect/backend.h"
#include "redirect/host.h"
#include "zds/zds_server.h"

namespace ambient::agent {

// What ztunnel and our cache know a pod by.
struct PodIdentity {
  std::string uid;
  zds::WorkloadInfo info;
  std::vector<IpAddress> ips;                      // go into the host's probe set
  std::map<std::string, std::string> annotations;  // per-pod redirection overrides
  std::string name() const { return info.ns + "/" + info.name; }
};

// Who gets enrolled on the CNI path. Standalone: by namespace, from a flag
// (no Kubernetes). Kubernetes: upstream's selectors over the informer cache.
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

// Told when a pod's enrollment changes (the Kubernetes controller writes
// the redirection annotation from here, off the CNI path).
class EnrollmentListener {
 public:
  virtual ~EnrollmentListener() = default;
  virtual void enrolled(const PodIdentity& pod) = 0;
};

struct EnrolledPod {
  zds::Workload workload;
  redirect::PodRedirectConfig redirect;
  std::vector<IpAddress> ips;
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
  // Where /cmdadd time goes (seconds): the whole request, and its phases.
  metrics::Histogram cmdadd, parse, decision, netns_open, rules, zds_add, probe_set;
};

class Agent {
 public:
  Agent(const Config& cfg, redirect::RedirectBackend& backend) : cfg_(cfg), backend_(backend) {}

  // Must be set before the CNI socket serves requests.
  void set_policy(const EnrollmentPolicy* p) { policy_ = p; }

  void set_zds(zds::ZdsServer* zds) { zds_ = zds; }
  void set_listener(EnrollmentListener* l) { listener_ = l; }
  // Host-side probe set (kubelet probe SNAT); optional.
  void set_host(redirect::HostRedirect* h) { host_ = h; }

  // HTTP handler for the plugin's socket (/cmdadd, /cmddel).
  http::Response handle_cni(const http::Request& req);

  Result<> cmd_add(const cni::CniEvent& ev);
  Result<> cmd_del(const cni::CniEvent& ev);

  // The shared add pipeline: hand `ns` to ztunnel, install redirection in
  // it while ztunnel works, remember the pod. On failure nothing of ours
  // stays in `ns`, and ztunnel is told to forget the pod.
  Result<> add_pod(const PodIdentity& pod, const netns::NetnsRef& ns);
  // Forgets the pod and tells ztunnel. The in-pod rules are removed unless
  // the netns is going away anyway (pod deleted or terminal).
  Result<> remove_pod(const std::string& uid, bool netns_going_away);
  // Startup: re-adopt a pod enrolled by an earlier run (netns may be
  // unknown: ztunnel then gets Keep). Rules are reconciled when known.
  Result<> adopt_pod(const PodIdentity& pod, const netns::NetnsRef& ns, bool reconcile_rules);
  bool is_enrolled(const std::string& uid) const { return cache_.get(uid).has_value(); }

  std::vector<zds::Workload> snapshot() const { return cache_.workloads(); }
  const PodCache& cache() const { return cache_; }
  const Metrics& metrics() const { return metrics_; }
  Metrics& metrics() { return metrics_; }

 private:
  std::mutex& pod_lock(const std::string& uid);
  Result<> add_to_probe_set(const std::string& uid, const std::vector<IpAddress>& ips);
  void remove_from_probe_set(const std::string& uid, const std::vector<IpAddress>& ips);

  const Config& cfg_;
  redirect::RedirectBackend& backend_;
  const EnrollmentPolicy* policy_ = nullptr;
  zds::ZdsServer* zds_ = nullptr;
  EnrollmentListener* listener_ = nullptr;
  redirect::HostRedirect* host_ = nullptr;
  std::mutex host_mu_;  // the host redirect's libraries are not thread-safe
  PodCache cache_;
  Metrics metrics_;
  // Serialises work on one pod (a retried ADD racing a DEL) without
  // serialising different pods.
  std::array<std::mutex, 64> pod_locks_;
};

// Global settings plus the pod's override annotations (redirection.md §4):
// ambient.istio.io/bypass-inbound-capture, ambient.istio.io/dns-capture,
// istio.io/reroute-virtual-interfaces. Invalid values are ignored with a
// warning.
redirect::PodRedirectConfig pod_redirect_config(
    const Config& cfg, const std::map<std::string, std::string>& annotations,
    const std::string& pod = "");

// The pod's key: the Kubernetes UID when the plugin sent it, else
// namespace/name (upstream plugins do not send the UID).
std::string pod_key(const cni::CniEvent& ev);

}  // namespace ambient::agent
