// Where the admin API's answers come from. The gRPC service (service.h)
// does the request checking, lookups and error mapping over this narrow
// interface, so it is tested against a scripted source, and the agent's
// real one (agent_source.h) stays a thin read of the agent's parts.
#pragma once

#include <vector>

#include "admin.pb.h"
#include "admin/events.h"
#include "lib/result.h"

namespace ambient::admin {

class AdminSource {
 public:
  virtual ~AdminSource() = default;
  virtual v1::Status status() const = 0;
  // Every pod the agent knows (enrolled, without netns, failed), any order.
  virtual std::vector<v1::Pod> pods() const = 0;
  // One pod's live state against what the agent would install. Called on
  // the admin server's threads; it may enter the pod's netns (through a
  // netns worker) and take a while.
  virtual Result<v1::PodVerify> verify(const v1::Pod& pod) const = 0;
  // A probe through the pod's redirection (docs/ambientctl.md#trace).
  virtual Result<v1::TraceResponse> trace(const v1::Pod* pod, const v1::TraceRequest& req) = 0;
  virtual EventHub& events() = 0;
};

}  // namespace ambient::admin
