// The enrollment pipeline behind /cmdadd and /cmddel: decide, open the pod
// netns, hand it to ztunnel and install redirection meanwhile, add the pod's
// IPs to the host's probe set, remember the pod.
// A pod is either fully enrolled (rules in place and ztunnel acked) or
// carries none of our rules: every failure after the install rolls it back.
// The transport (HTTP on pluginevent.sock) lives in cni_server/.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "agent/observer.h"
#include "agent/pod_cache.h"
#include "agent/policy.h"
#include "config/config.h"
#include "lib/cni_event.h"
#include "metrics/metrics.h"
#include "netns/netns.h"
#include "redirect/backend.h"
#include "redirect/host.h"
#include "zds/zds_server.h"

namespace ambient::agent {

class StandaloneStore;

// Everything the agent works with, owned by the composition root and alive
// for as long as the agent.
struct AgentDeps {
  const Config& config;
  redirect::RedirectBackend& backend;
  redirect::HostRedirect& host;  // the node's probe set
  zds::ZdsServer& zds;
  PodCache& pods;
  const EnrollmentPolicy& policy;
  EnrollmentListener* listener = nullptr;  // none in standalone mode
  StandaloneStore* store = nullptr;        // standalone mode: enrollments kept across restarts
  metrics::EnrollMetrics metrics;          // where enrollment time goes, by phase
  EnrollmentObserver* observer = nullptr;  // the admin API's journal, if any
};

class Agent {
 public:
  explicit Agent(AgentDeps deps);

  Result<> cmd_add(const cni::CniEvent& ev);
  Result<> cmd_del(const cni::CniEvent& ev);

  // The shared add pipeline: hand `ns` to ztunnel, install redirection in
  // it while ztunnel works, remember the pod. On failure nothing of ours
  // stays in `ns`, and ztunnel is told to forget the pod.
  Result<> add_pod(const PodIdentity& pod, const netns::NetnsRef& ns);
  // The netns a request names, opened as a pod's: a path a container
  // runtime gives (netns::open_requested), never the node's or the agent's
  // own netns. `pod` names the requester in errors.
  Result<netns::Netns> open_pod_netns(const std::string& requested, const std::string& pod) const;
  // Forgets the pod and tells ztunnel. The in-pod rules are removed unless
  // the netns is going away anyway (pod deleted or terminal).
  Result<> remove_pod(const std::string& uid, bool netns_going_away);
  // Startup: re-adopt a pod enrolled by an earlier run (netns may be
  // unknown: ztunnel then gets Keep). Rules are reconciled when known.
  Result<> adopt_pod(const PodIdentity& pod, const netns::NetnsRef& ns, bool reconcile_rules);
  // An enrolled pod's IPs are now `ips` (they appeared or changed after
  // enrollment): its probe-set entries follow. Unknown pods are ignored.
  Result<> update_pod_ips(const std::string& uid, const std::vector<IpAddress>& ips);
  bool is_enrolled(const std::string& uid) const { return pods_.get(uid).has_value(); }
  // The agent's own periodic verify (docs/ambientctl.md#self-verify): checks
  // an enrolled pod's redirection and, when it is wrong, installs it again
  // (install leaves what is right alone). Under the pod's lock, so it never
  // races the pod's ADD or DEL. The problems repaired; none when all was
  // right, or the pod is gone or has no known netns.
  Result<std::vector<std::string>> repair_pod(const std::string& uid);

 private:
  Result<> require_ztunnel(const PodIdentity& id);
  struct ForbiddenNetns {
    dev_t dev;
    ino_t ino;
    std::string path;
  };
  // The outcome of each step of one enrollment.
  struct AddSteps {
    Result<> installed, probed, acked, marked;
    Result<> ready;        // the backend's ztunnel_ready
    bool handed = false;   // the Add was sent to ztunnel
    bool marking = false;  // the annotation was being written
  };
  Result<> adapt_to_ztunnel(const netns::Netns& ns, const redirect::PodRedirectConfig& rcfg);
  // After the pod entered the cache: re-sends its Add when ztunnel
  // connected anew since `acked_on` acked it.
  void follow_reconnect(const zds::Workload& w, uint64_t acked_on);
  Result<> undo_failed_add(const PodIdentity& id, const netns::Netns& ns,
                           const redirect::PodRedirectConfig& rcfg, AddSteps steps);
  Result<> check_not_forbidden(const netns::Netns& ns, const std::string& pod) const;
  bool names_enrolled_sandbox(const EnrolledPod& entry, const cni::CniEvent& ev) const;
  void clean_named_netns(const cni::CniEvent& ev, const std::string& pod);
  void retire_sandbox(const EnrolledPod& old, const PodIdentity& now);
  std::mutex& pod_lock(const std::string& uid);
  Result<> add_to_probe_set(const std::string& uid, const std::vector<IpAddress>& ips);
  void remove_from_probe_set(const std::string& uid, const std::vector<IpAddress>& ips);

  const Config& cfg_;
  redirect::RedirectBackend& backend_;
  redirect::HostRedirect& host_;
  zds::ZdsServer& zds_;
  PodCache& pods_;
  const EnrollmentPolicy& policy_;
  EnrollmentListener* const listener_;
  StandaloneStore* const store_;
  EnrollmentObserver* const observer_;
  std::mutex host_mu_;  // the host redirect's libraries are not thread-safe
  const metrics::EnrollMetrics metrics_;
  std::vector<ForbiddenNetns> forbidden_netns_;  // the node's and the agent's own
  // Serialises work on one pod (a retried ADD racing a DEL) without
  // serialising different pods.
  std::array<std::mutex, 64> pod_locks_;
  // The ZDS connection whose listeners the backend found suitable
  // (RedirectBackend::ztunnel_ready): later pods it serves skip the check.
  std::atomic<uint64_t> listeners_suit_conn_{0};
};

}  // namespace ambient::agent
