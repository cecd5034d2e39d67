// The agent's one metrics registry and its text for /metrics
// (docs/node-agent.md#metrics). The composition root owns it and hands each
// component the objects it updates (metrics/metrics.h). A component's
// families are registered when it asks for them, so /metrics shows only
// the parts that run (no installer metrics with the installer off, no
// reconcile events in standalone mode).
#pragma once

#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "lib/result.h"

#include "metrics/metrics.h"
#include "metrics/process_metrics.h"

namespace ambient::metrics {

class AgentMetrics {
 public:
  AgentMetrics();
  AgentMetrics(const AgentMetrics&) = delete;
  AgentMetrics& operator=(const AgentMetrics&) = delete;

  // Each registers its families on the first call; later calls return the
  // same objects.
  CniMetrics cni();
  EnrollMetrics enroll();
  ZdsMetrics zds();
  InstallMetrics installer();
  ReconcileMetrics reconcile();
  prometheus::Counter* store_write_failures();

  // Gauges whose owners know the value: read at each scrape rather than
  // kept in step. Set before serving; null leaves the gauge out.
  struct ScrapeSources {
    std::function<double()> ztunnel_connected;
    std::function<double()> enrolled_pods;
    // Per-decision packet counters of a redirection backend that keeps
    // them (eBPF): its name, and each decision's count so far. An error
    // leaves the family out of that scrape.
    std::string decisions_backend;
    std::function<Result<std::vector<std::pair<std::string, double>>>()> decisions;
    // eBPF: pods moved to the netfilter rules (docs/redirection.md#ebpf-fallback).
    std::function<double()> ebpf_rules_pods;
  };
  void set_scrape_sources(ScrapeSources sources);

  // The text exposition format (0.0.4): the registry, then the process
  // metrics read now. Safe to call from several threads at once.
  std::string serialize() const;

 private:
  // /cmdadd's parse phase is timed by the CNI server, the rest by the agent.
  prometheus::Family<prometheus::Histogram>& enroll_phases();
  prometheus::MetricFamily decisions_family() const;

  prometheus::Registry registry_;
  ProcessCollector process_;
  ScrapeSources sources_;
  prometheus::Gauge* ztunnel_connected_ = nullptr;
  prometheus::Gauge* enrolled_pods_ = nullptr;
  prometheus::Gauge* ebpf_rules_pods_ = nullptr;
};

// The content type of serialize()'s text.
inline constexpr const char* kTextContentType = "text/plain; version=0.0.4";

}  // namespace ambient::metrics
