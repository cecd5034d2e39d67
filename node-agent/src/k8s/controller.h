// Kubernetes mode of the agent: informers for this node's pods and all
// namespaces, upstream's enrollment decision, enrolling and unenrolling
// running pods, the redirection annotation, and startup reconciliation.
//
// Threads: the informers' threads only enqueue; one worker applies the
// decision table (so pod work is serialised as upstream's queue is); one
// writer patches annotations with retries in the background. The
// `enabled` annotation of a pod being enrolled is written at once on a
// thread of its own, since the enrollment waits for it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "agent/agent.h"
#include "k8s/informer.h"
#include "k8s/kube_client.h"
#include "k8s/selector_yaml.h"
#include "lib/k8s/enablement.h"
#include "metrics/metrics.h"
#include "netns/proc_scan.h"

namespace ambient::k8s {

class Controller : public agent::EnrollmentPolicy, public agent::EnrollmentListener {
 public:
  // `metrics`: nodeagent_reconcile_events_total (docs/node-agent.md#metrics).
  Controller(const agent::Config& cfg, const KubeClient& client,
             std::vector<EnablementSelector> selectors, netns::ProcScanDeps proc,
             metrics::ReconcileMetrics metrics = {});
  ~Controller() override;

  // Starts the informers and waits (retrying, never giving up) until both
  // listed; then rebuilds enrolled pods from annotations and /proc into
  // `agent`, and starts the worker that keeps them in step with the
  // cluster. Returns false only when stop() was called meanwhile.
  bool start(agent::Agent& agent);
  void stop();

  // CNI path: decide from the cache, waiting up to 5 s for the pod to
  // appear (the plugin usually runs before the informer has seen it).
  Result<std::optional<agent::PodIdentity>> decide(const cni::CniEvent& ev) const override;

  // How long an enrollment may wait for its `enabled` annotation, retries
  // included: well inside the plugin's 5 s for the whole ADD
  // (docs/node-agent.md#annotations).
  static constexpr std::chrono::milliseconds kMarkBudget{3000};
  // Patches `enabled` now, on a thread of its own, retrying transport
  // errors, 429 and 5xx within kMarkBudget.
  std::future<Result<>> mark_enrolled(const agent::PodIdentity& pod) override;
  // Back to the annotation the pod had before: `pending` stays `pending`,
  // anything else but `enabled` is removed.
  void unmark_failed(const agent::PodIdentity& pod) override;
  // Drops an `enabled` mark in the background, unless the pod is gone or
  // being deleted (its removal needs no patch).
  void sandbox_removed(const std::string& ns, const std::string& name) override;

  // Upgrade (DaemonSet still there and still targeting this node by its
  // nodeSelector and required node affinity) or uninstall.
  bool is_upgrade() const;

  const Informer& pods() const { return *pods_; }

 private:
  enum class Annotation { Enabled, Pending, Remove };
  struct WorkItem {
    std::string key;       // ns/name
    EventType event;       // what the informer saw (a namespace's fan-out: Modified)
    ObjectRef deleted;     // set for a pod Delete event
    bool waiting = false;  // its key is in waiting_
  };

  void on_pod(EventType t, const ObjectRef& old, const ObjectRef& cur);
  void on_namespace(EventType t, const ObjectRef& old, const ObjectRef& cur);
  void enqueue(WorkItem item, std::chrono::milliseconds delay = {});
  void worker();
  void count_event(EventType t) const;
  // Applies the decision table to one pod; an error means retry later.
  Result<> reconcile(const WorkItem& item);
  Result<> enroll_running(const json::Json& pod);
  bool should_enroll(const json::Json& pod, const json::Json* ns) const;
  void annotate(const json::Json& pod, Annotation a);
  void annotate(const std::string& ns, const std::string& name, Annotation a);
  void annotation_writer();
  Result<> write_enabled(const std::string& ns, const std::string& name, const std::string& before);
  // The probe set follows an enrolled pod's status IPs.
  Result<> follow_pod_ips(const std::string& uid, const json::Json& pod);
  // `listed_in`: from the informers' start to both caches synced, for the log.
  void rebuild_from_cluster(std::chrono::steady_clock::duration listed_in);

  const agent::Config& cfg_;
  const KubeClient& client_;
  agent::Agent* agent_ = nullptr;  // set by start(), before any event is delivered
  std::vector<EnablementSelector> selectors_;
  netns::ProcScanDeps proc_;
  const metrics::ReconcileMetrics metrics_;
  std::unique_ptr<Informer> pods_, namespaces_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::multimap<std::chrono::steady_clock::time_point, WorkItem> queue_;
  std::map<std::string, int> attempts_;
  // Keys with an item queued for now that the worker has not taken yet: a
  // new event for one of them is merged into it.
  std::set<std::string> waiting_;
  std::thread worker_;

  struct PatchJob {
    std::string ns, name, body;
    int attempt = 0;
    std::chrono::steady_clock::time_point due;
  };
  std::deque<PatchJob> patches_;
  // ns/name -> the annotation body last patched successfully, and the
  // patch being sent now (under mu_): what annotate() need not repeat.
  std::map<std::string, std::string> last_patched_;
  std::optional<PatchJob> in_flight_;
  // ns/name -> enrollments writing `enabled` right now; the writer holds
  // back its own patches for these pods meanwhile, so they cannot land
  // out of order.
  std::map<std::string, int> marking_;
  // uid -> the status IPs last acted on for an enrolled pod (worker only).
  std::map<std::string, std::vector<IpAddress>> status_ips_;
  std::condition_variable patch_cv_;
  std::thread patcher_;
};

}  // namespace ambient::k8s
