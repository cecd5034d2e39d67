// What the admin API knows about enrollments beyond the pod cache: when
// each pod was enrolled and how long each step took, and the last failure
// of pods that are not enrolled. Fed by the enrollment pipeline (as its
// EnrollmentObserver), it also turns what it records into events.
// Thread-safe; every call is a short lock and a map update.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "admin/events.h"
#include "agent/observer.h"

namespace ambient::admin {

struct PodRecord {
  std::string ns, name;
  std::chrono::system_clock::time_point enrolled_at{};  // epoch: not enrolled by this run
  agent::EnrollmentTimes times;
  std::string last_error;
  std::chrono::system_clock::time_point last_error_at{};
  bool failed = false;  // the last attempt failed (and the pod is not enrolled by it)
};

class Journal : public agent::EnrollmentObserver {
 public:
  // Failed pods are remembered up to this many; the oldest go first.
  static constexpr size_t kMaxFailed = 1024;

  explicit Journal(EventHub& events) : events_(events) {}

  void enrolled(const agent::PodIdentity& pod, const agent::EnrollmentTimes& times) override;
  void enrollment_failed(const agent::PodIdentity& pod, const std::string& error) override;
  void removed(const std::string& uid, const std::string& ns, const std::string& name) override;

  std::optional<PodRecord> get(const std::string& uid) const;
  // uid → record, for the pods whose last attempt failed.
  std::map<std::string, PodRecord> failed() const;
  // A problem on an enrolled pod (drift), kept as its last error.
  void note_error(const std::string& uid, const std::string& ns, const std::string& name,
                  const std::string& error);

 private:
  EventHub& events_;
  mutable std::mutex mu_;
  std::map<std::string, PodRecord> pods_;
};

}  // namespace ambient::admin
