// The pods this agent has enrolled, by pod key (UID). It is the agent's
// whole state: the ZDS snapshot ztunnel gets on connecting is read from it.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "lib/ip_address.h"
#include "redirect/backend.h"
#include "zds/zds_server.h"

namespace ambient::agent {

struct EnrolledPod {
  zds::Workload workload;
  redirect::PodRedirectConfig redirect;
  std::vector<IpAddress> ips;
  std::string container_id;  // the sandbox's, when the runtime named it
};

// Thread-safe.
class PodCache {
 public:
  void upsert(EnrolledPod p);
  std::optional<EnrolledPod> take(const std::string& uid);
  std::optional<EnrolledPod> get(const std::string& uid) const;
  std::vector<zds::Workload> workloads() const;
  std::vector<EnrolledPod> all() const;  // a copy, for the admin API
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, EnrolledPod> pods_;
};

}  // namespace ambient::agent
