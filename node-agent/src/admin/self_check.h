// The agent watching its own work (docs/ambientctl.md#self-verify), on one
// thread of its own, never the CNI handlers':
// - every second, ZDS connections coming and going become events;
// - every --self-verify-interval, each enrolled pod's redirection is
//   checked against what the agent would install (the backends compare
//   against a cached reference, so a clean pod costs a read, not a
//   rebuild). Drift in our own rules, routes or sysctls is repaired,
//   counted in ambient_drift_repairs_total{kind}, logged, published as an
//   event and, in Kubernetes mode, posted as an Event on the pod. Missing
//   ztunnel listeners are ztunnel's to fix: reported once, not repaired.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "admin/events.h"
#include "admin/journal.h"
#include "agent/pod_cache.h"
#include "lib/result.h"
#include "zds/zds_server.h"

namespace ambient::admin {

// What a drift problem is about: "routing" (route table 100, the fwmark
// rule), "sysctl", else "rules" (iptables chains, nftables tables, BPF
// programs).
std::string drift_kind(const std::string& problem);

class SelfCheck {
 public:
  struct Deps {
    const agent::PodCache& pods;
    const zds::ZdsServer& zds;
    Journal& journal;
    EventHub& events;
    // Agent::repair_pod.
    std::function<Result<std::vector<std::string>>(const std::string& uid)> repair;
    // ztunnel's listeners missing in the pod's netns ("tcp/15001", ...).
    std::function<Result<std::vector<std::string>>(const std::string& uid)> missing_listeners;
    // Kubernetes mode: posts an Event on the pod; empty in standalone mode.
    std::function<void(const agent::EnrolledPod& pod, const std::string& message)> pod_event;
    std::chrono::seconds interval{60};  // 0: no periodic verify
  };

  explicit SelfCheck(Deps deps);
  ~SelfCheck();  // stops the thread
  // Ends the periodic work; repairs() and metrics_text() still answer.
  void stop();
  SelfCheck(const SelfCheck&) = delete;
  SelfCheck& operator=(const SelfCheck&) = delete;

  // One pass over every enrolled pod now (what the timer runs).
  void verify_all();
  int64_t repairs() const;
  // ambient_drift_repairs_total, in the text exposition format.
  std::string metrics_text() const;

 private:
  void loop();

  Deps d_;
  prometheus::Registry registry_;
  prometheus::Family<prometheus::Counter>* repairs_family_;
  std::map<std::string, prometheus::Counter*> repairs_;  // by kind, made on first use
  mutable std::mutex mu_;
  std::map<std::string, std::string> reported_listeners_;  // uid → last report
  std::mutex pass_mu_;                                     // one pass at a time
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ambient::admin
