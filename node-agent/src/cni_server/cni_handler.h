// The plugin's socket (pluginevent.sock) in front of the Agent: POST
// /cmdadd and /cmddel with upstream's JSON body, answered 200 (done, or not
// selected), 400 (a body that is not a valid event) or 500 (the pod could
// not be enrolled; the text says why). docs/compatibility.md#plugin-agent-protocol
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

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

// The plugin runs as root (the container runtime's user): a connection
// from any other user is refused with 403 before its request is read, as
// is one whose peer cannot be identified. The agent's own user is allowed
// too, for an agent that runs unprivileged in a test.
std::optional<http::Response> refuse_non_root(int fd);

}  // namespace ambient::cni_server
