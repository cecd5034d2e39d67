// The plugin's socket (pluginevent.sock) in front of the Agent: POST
// /cmdadd and /cmddel with upstream's JSON body, answered 200 (done, or not
// selected), 400 (a body that is not a valid event) or 500 (the pod could
// not be enrolled; the text says why). docs/compatibility.md#plugin-agent-protocol
#pragma once

#include <atomic>
#include <cstdint>

#include "agent/agent.h"
#include "http/server.h"
#include "metrics/histogram.h"

namespace ambient::cni_server {

struct CniMetrics {
  // istio_cni_plugin_requests_total{response_code}: /cmdadd answers.
  std::atomic<uint64_t> requests_200{0}, requests_400{0}, requests_500{0};
  // The whole /cmdadd, and its parse phase (seconds).
  metrics::Histogram cmdadd, parse;
};

class CniHandler {
 public:
  explicit CniHandler(agent::Agent& agent) : agent_(agent) {}

  http::Response handle(const http::Request& req);
  const CniMetrics& metrics() const { return metrics_; }

 private:
  agent::Agent& agent_;
  CniMetrics metrics_;
};

}  // namespace ambient::cni_server
