#include "metrics/agent_metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <iterator>

#include "log/log.h"

namespace ambient::metrics {

namespace {

// Upper bounds in seconds, 100 µs to 10 s: from the quickest phases (a
// decision) to a /cmdadd stuck until the plugin gives up
// (docs/performance.md has the usual figures).
const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0};
  return b;
}

}  // namespace

AgentMetrics::AgentMetrics() = default;

CniMetrics AgentMetrics::cni() {
  // Upstream's name; its three answers are always shown, 0 or not.
  auto& requests = prometheus::BuildCounter()
                       .Name("istio_cni_plugin_requests_total")
                       .Help("CNI events handled by the agent.")
                       .Register(registry_);
  auto& cmdadd = prometheus::BuildHistogram()
                     .Name("ambient_cmdadd_duration_seconds")
                     .Help("Time to answer the plugin's /cmdadd.")
                     .Register(registry_);
  return {.requests_200 = &requests.Add({{"response_code", "200"}}),
          .requests_400 = &requests.Add({{"response_code", "400"}}),
          .requests_500 = &requests.Add({{"response_code", "500"}}),
          .cmdadd = &cmdadd.Add({}, latency_buckets()),
          .parse = &enroll_phases().Add({{"phase", "parse"}}, latency_buckets())};
}

prometheus::Family<prometheus::Histogram>& AgentMetrics::enroll_phases() {
  return prometheus::BuildHistogram()
      .Name("ambient_enroll_phase_duration_seconds")
      .Help("Enrollment time by phase.")
      .Register(registry_);
}

EnrollMetrics AgentMetrics::enroll() {
  auto& phases = enroll_phases();
  auto phase = [&](const char* name) { return &phases.Add({{"phase", name}}, latency_buckets()); };
  return {.decision = phase("decision"),
          .netns_open = phase("netns"),
          .rules = phase("rules"),
          .zds_add = phase("zds"),
          .probe_set = phase("probe_set")};
}

ZdsMetrics AgentMetrics::zds() {
  auto& trip = prometheus::BuildHistogram()
                   .Name("ambient_zds_round_trip_duration_seconds")
                   .Help("ZDS message sent to ztunnel's ack.")
                   .Register(registry_);
  auto op = [&](const char* name) { return &trip.Add({{"op", name}}, latency_buckets()); };
  return {
      .add = op("add"), .del = op("del"), .keep = op("keep"), .snapshot_sent = op("snapshot_sent")};
}

InstallMetrics AgentMetrics::installer() {
  auto& installs = prometheus::BuildCounter()
                       .Name("istio_cni_installs_total")
                       .Help("Installer passes, by outcome.")
                       .Register(registry_);
  auto result = [&](const char* r) { return &installs.Add({{"result", r}}); };
  auto& ready = prometheus::BuildGauge()
                    .Name("istio_cni_install_ready")
                    .Help(
                        "Whether the plugin, its kubeconfig and its CNI config entry are in place "
                        "(1) or not (0).")
                    .Register(registry_);
  return {.success = result("SUCCESS"),
          .copy_binaries_failure = result("COPY_BINARIES_FAILURE"),
          .create_kubeconfig_failure = result("CREATE_KUBECONFIG_FAILURE"),
          .create_cni_config_failure = result("CREATE_CNI_CONFIG_FAILURE"),
          .ready = &ready.Add({})};
}

ReconcileMetrics AgentMetrics::reconcile() {
  auto& events = prometheus::BuildCounter()
                     .Name("nodeagent_reconcile_events_total")
                     .Help("Pod and namespace informer events processed, by event type.")
                     .Register(registry_);
  return {.add = &events.Add({{"type", "add"}}),
          .update = &events.Add({{"type", "update"}}),
          .del = &events.Add({{"type", "delete"}})};
}

prometheus::Counter* AgentMetrics::store_write_failures() {
  return &prometheus::BuildCounter()
              .Name("ambient_standalone_store_write_failures_total")
              .Help("Failed saves of the enrolled pods to the run dir (standalone mode).")
              .Register(registry_)
              .Add({});
}

void AgentMetrics::set_scrape_sources(ScrapeSources sources) {
  sources_ = std::move(sources);
  if (sources_.ztunnel_connected) {
    ztunnel_connected_ = &prometheus::BuildGauge()
                              .Name("ztunnel_connected")
                              .Help("Number of connected ztunnels.")
                              .Register(registry_)
                              .Add({});
  }
  if (sources_.ebpf_rules_pods) {
    ebpf_rules_pods_ =
        &prometheus::BuildGauge()
             .Name("ambient_ebpf_rules_fallback_pods")
             .Help(
                 "Pods that eBPF redirection moved to the netfilter rules because ztunnel's "
                 "outbound listener has no IP_TRANSPARENT.")
             .Register(registry_)
             .Add({});
  }
  if (sources_.enrolled_pods) {
    enrolled_pods_ = &prometheus::BuildGauge()
                          .Name("ambient_enrolled_pods")
                          .Help("Pods currently enrolled by this agent.")
                          .Register(registry_)
                          .Add({});
  }
}

// Built at each scrape from the backend's own counters, which only grow
// while the agent runs, so they are counters and not gauges.
prometheus::MetricFamily AgentMetrics::decisions_family() const {
  prometheus::MetricFamily f{.name = "ambient_redirect_decisions_total",
                             .help =
                                 "Packets by the in-pod redirection decision taken "
                                 "(eBPF backend; docs/redirection.md#ebpf-counters).",
                             .type = prometheus::MetricType::Counter};
  auto counts = sources_.decisions();
  if (!counts) {
    log::debug("redirect decision counters not read: {}", counts.error().describe());
    return f;
  }
  for (const auto& [decision, value] : *counts) {
    prometheus::ClientMetric m;
    m.label = {{.name = "backend", .value = sources_.decisions_backend},
               {.name = "decision", .value = decision}};
    m.counter.value = value;
    f.metric.push_back(std::move(m));
  }
  return f;
}

std::string AgentMetrics::serialize() const {
  if (ztunnel_connected_) ztunnel_connected_->Set(sources_.ztunnel_connected());
  if (enrolled_pods_) enrolled_pods_->Set(sources_.enrolled_pods());
  if (ebpf_rules_pods_) ebpf_rules_pods_->Set(sources_.ebpf_rules_pods());
  auto families = registry_.Collect();
  if (sources_.decisions) {
    auto decisions = decisions_family();
    if (!decisions.metric.empty()) families.push_back(std::move(decisions));
  }
  auto process = process_.Collect();
  families.insert(families.end(), std::make_move_iterator(process.begin()),
                  std::make_move_iterator(process.end()));
  // A family keeps its series in a hash map: sorted, a scrape reads the
  // same from one time to the next.
  for (auto& f : families) {
    std::sort(f.metric.begin(), f.metric.end(),
              [](const auto& a, const auto& b) { return a.label < b.label; });
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace ambient::metrics
