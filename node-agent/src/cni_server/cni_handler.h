// The plugin's socket (pluginevent.sock) in front of the Agent: POST
// /cmdadd and /cmddel with upstream's JSON body, answered 200 (done, or not
// selected), 400 (a body that is not a valid event) or 500 (the pod could
// not be enrolled; the text says why). docs/compatibility.md#plugin-agent-protocol
#pragma once

#include <optional>

#include "agent/agent.h"
#include "http/server.h"
#include "metrics/metrics.h"

namespace ambient::cni_server {

class CniHandler {
 public:
  // `metrics`: /cmdadd answers by status, and their timings.
  explicit CniHandler(agent::Agent& agent, metrics::CniMetrics metrics = {})
      : agent_(agent), metrics_(metrics) {}

  http::Response handle(const http::Request& req);

 private:
  agent::Agent& agent_;
  const metrics::CniMetrics metrics_;
};

}  // namespace ambient::cni_server
