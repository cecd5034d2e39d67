// What the enrollment pipeline tells an onlooker (the admin API's journal
// and event stream): each enrollment with its step times, each failure,
// each removal. Called on the CNI handlers' and the controller's threads,
// under the pod's lock, so an observer must only record and return: never
// block, never call back into the agent.
#pragma once

#include <string>

#include "agent/policy.h"

namespace ambient::agent {

struct EnrollmentTimes {
  double rules_s = 0, probe_set_s = 0, zds_ack_s = 0;
};

class EnrollmentObserver {
 public:
  virtual ~EnrollmentObserver() = default;
  virtual void enrolled(const PodIdentity& pod, const EnrollmentTimes& times) = 0;
  virtual void enrollment_failed(const PodIdentity& pod, const std::string& error) = 0;
  virtual void removed(const std::string& uid, const std::string& ns, const std::string& name) = 0;
};

}  // namespace ambient::agent
