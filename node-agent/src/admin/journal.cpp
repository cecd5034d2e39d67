#include "admin/journal.h"

#include <fmt/format.h>

namespace ambient::admin {

void Journal::enrolled(const agent::PodIdentity& pod, const agent::EnrollmentTimes& times) {
  {
    std::lock_guard lk(mu_);
    auto& r = pods_[pod.uid];
    r.ns = pod.info.ns;
    r.name = pod.info.name;
    r.enrolled_at = std::chrono::system_clock::now();
    r.times = times;
    r.failed = false;
  }
  events_.publish(
      pod_event("enrolled", pod.info.ns, pod.info.name, pod.uid,
                fmt::format("rules {:.2f} ms, probe set {:.2f} ms, ztunnel's ack {:.2f} ms",
                            times.rules_s * 1e3, times.probe_set_s * 1e3, times.zds_ack_s * 1e3)));
}

void Journal::enrollment_failed(const agent::PodIdentity& pod, const std::string& error) {
  {
    std::lock_guard lk(mu_);
    auto& r = pods_[pod.uid];
    r.ns = pod.info.ns;
    r.name = pod.info.name;
    r.last_error = error;
    r.last_error_at = std::chrono::system_clock::now();
    // A replacing sandbox that failed leaves the enrolled one in place.
    if (r.enrolled_at == std::chrono::system_clock::time_point{}) r.failed = true;
    size_t failed = 0;
    for (const auto& [uid, rec] : pods_) failed += rec.failed ? 1 : 0;
    while (failed > kMaxFailed) {
      auto oldest = pods_.end();
      for (auto it = pods_.begin(); it != pods_.end(); ++it) {
        if (it->second.failed &&
            (oldest == pods_.end() || it->second.last_error_at < oldest->second.last_error_at)) {
          oldest = it;
        }
      }
      pods_.erase(oldest);
      --failed;
    }
  }
  events_.publish(pod_event("failed", pod.info.ns, pod.info.name, pod.uid, error));
}

void Journal::removed(const std::string& uid, const std::string& ns, const std::string& name) {
  {
    std::lock_guard lk(mu_);
    pods_.erase(uid);
  }
  events_.publish(pod_event("removed", ns, name, uid, "removed from the mesh"));
}

void Journal::note_error(const std::string& uid, const std::string& ns, const std::string& name,
                         const std::string& error) {
  std::lock_guard lk(mu_);
  auto& r = pods_[uid];
  r.ns = ns;
  r.name = name;
  r.last_error = error;
  r.last_error_at = std::chrono::system_clock::now();
}

std::optional<PodRecord> Journal::get(const std::string& uid) const {
  std::lock_guard lk(mu_);
  auto it = pods_.find(uid);
  if (it == pods_.end()) return std::nullopt;
  return it->second;
}

std::map<std::string, PodRecord> Journal::failed() const {
  std::lock_guard lk(mu_);
  std::map<std::string, PodRecord> out;
  for (const auto& [uid, r] : pods_) {
    if (r.failed) out.emplace(uid, r);
  }
  return out;
}

}  // namespace ambient::admin
