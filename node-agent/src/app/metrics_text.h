// /metrics in Prometheus' text format: upstream's metric names
// (istio_cni_plugin_requests_total, ztunnel_connected) and our ambient_*
// latency histograms. docs/compatibility.md#metrics
#pragma once

#include <cstdint>
#include <string>

#include "agent/agent.h"
#include "cni_server/cni_handler.h"
#include "zds/zds_server.h"

namespace ambient::app {

std::string metrics_text(const cni_server::CniMetrics& cni, const agent::EnrollMetrics& enroll,
                         size_t enrolled_pods, const zds::ZdsServer& zds);

// Standalone mode only: failed saves of the enrolled pods
// (docs/node-agent.md#standalone-mode).
std::string standalone_store_metrics_text(uint64_t write_failures);

}  // namespace ambient::app
