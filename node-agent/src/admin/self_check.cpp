#include "admin/self_check.h"

#include <prometheus/text_serializer.h>

#include "log/log.h"

namespace ambient::admin {

std::string drift_kind(const std::string& problem) {
  if (problem.find("route local") != std::string::npos ||
      problem.find("rule fwmark") != std::string::npos) {
    return "routing";
  }
  if (problem.find("/proc/sys") != std::string::npos) return "sysctl";
  return "rules";
}

SelfCheck::SelfCheck(Deps deps)
    : d_(std::move(deps)),
      repairs_family_(&prometheus::BuildCounter()
                           .Name("ambient_drift_repairs_total")
                           .Help("Drift in the agent's own in-pod redirection found by its "
                                 "periodic verify and repaired, by what had drifted")
                           .Register(registry_)) {
  // Every kind from the start, so a rate over the counter sees its zero.
  for (const char* kind : {"rules", "routing", "sysctl"}) {
    repairs_[kind] = &repairs_family_->Add({{"kind", kind}});
  }
  thread_ = std::thread([this] { loop(); });
}

SelfCheck::~SelfCheck() { stop(); }

void SelfCheck::stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SelfCheck::loop() {
  size_t last_connections = d_.zds.connected();
  auto next_verify = std::chrono::steady_clock::now() + d_.interval;
  std::unique_lock lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stop_; });
    if (stop_) break;
    lk.unlock();
    const size_t n = d_.zds.connected();
    if (n != last_connections) {
      v1::Event e;
      e.set_kind(n > last_connections ? "zds_connected" : "zds_disconnected");
      e.set_message(std::to_string(n) + (n == 1 ? " ztunnel connection" : " ztunnel connections"));
      d_.events.publish(std::move(e));
      last_connections = n;
    }
    if (d_.interval.count() > 0 && std::chrono::steady_clock::now() >= next_verify) {
      verify_all();
      next_verify = std::chrono::steady_clock::now() + d_.interval;
    }
    lk.lock();
  }
}

void SelfCheck::verify_all() {
  std::lock_guard pass(pass_mu_);
  for (const auto& p : d_.pods.all()) {
    if (!p.workload.netns) continue;
    const std::string& uid = p.workload.uid;
    const std::string pod = p.workload.info.ns + "/" + p.workload.info.name;
    auto repaired = d_.repair(uid);
    if (!repaired) {
      log::warn("self-verify: pod {}: {}", pod, repaired.error().describe());
      d_.journal.note_error(uid, p.workload.info.ns, p.workload.info.name,
                            "self-verify: " + repaired.error().describe());
      continue;
    }
    if (!repaired->empty()) {
      std::string list;
      std::map<std::string, int> kinds;
      for (const auto& problem : *repaired) {
        list += (list.empty() ? "" : "; ") + problem;
        ++kinds[drift_kind(problem)];
      }
      {
        std::lock_guard lk(mu_);
        for (const auto& [kind, count] : kinds) {
          auto& c = repairs_[kind];
          if (!c) c = &repairs_family_->Add({{"kind", kind}});
          c->Increment(count);
        }
      }
      const std::string message = "drift in the pod's redirection repaired: " + list;
      log::warn("pod {}: {}", pod, message);
      d_.events.publish(pod_event("drift", p.workload.info.ns, p.workload.info.name, uid, list));
      d_.events.publish(
          pod_event("repaired", p.workload.info.ns, p.workload.info.name, uid, message));
      d_.journal.note_error(uid, p.workload.info.ns, p.workload.info.name, message);
      if (d_.pod_event) d_.pod_event(p, message);
    }
    if (!d_.missing_listeners) continue;
    auto missing = d_.missing_listeners(uid);
    std::string report;
    if (missing) {
      for (const auto& m : *missing) report += (report.empty() ? "" : ", ") + m;
    }
    std::string previous;
    {
      std::lock_guard lk(mu_);
      previous = reported_listeners_[uid];
      reported_listeners_[uid] = report;
    }
    // Reported when it changes: ztunnel's state is not ours to repair, and
    // a pod whose proxy is gone would otherwise be logged every pass.
    if (!report.empty() && report != previous) {
      const std::string message = "ztunnel listeners missing in the pod's netns: " + report;
      log::warn("pod {}: {}", pod, message);
      d_.events.publish(pod_event("drift", p.workload.info.ns, p.workload.info.name, uid, message));
    }
  }
  // Forget pods that are gone.
  std::lock_guard lk(mu_);
  for (auto it = reported_listeners_.begin(); it != reported_listeners_.end();) {
    it = d_.pods.get(it->first) ? std::next(it) : reported_listeners_.erase(it);
  }
}

int64_t SelfCheck::repairs() const {
  std::lock_guard lk(mu_);
  double total = 0;
  for (const auto& [kind, c] : repairs_) total += c->Value();
  return static_cast<int64_t>(total);
}

std::string SelfCheck::metrics_text() const {
  return prometheus::TextSerializer().Serialize(registry_.Collect());
}

}  // namespace ambient::admin
