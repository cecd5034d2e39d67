// What each component of the agent updates for /metrics
// (docs/node-agent.md#metrics). The objects live in the agent's registry
// (metrics/agent_metrics.h); a component gets pointers to its own, and a
// component built without them (a unit test) measures nothing. Updating is
// an atomic add (counters) or a short lock (histograms), nothing more.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <chrono>

namespace ambient::metrics {

// istio_cni_plugin_requests_total{response_code} and the /cmdadd timings.
struct CniMetrics {
  prometheus::Counter* requests_200 = nullptr;
  prometheus::Counter* requests_400 = nullptr;
  prometheus::Counter* requests_500 = nullptr;
  prometheus::Histogram* cmdadd = nullptr;  // the whole /cmdadd
  prometheus::Histogram* parse = nullptr;   // its parse phase
};

// ambient_enroll_phase_duration_seconds, by phase.
struct EnrollMetrics {
  prometheus::Histogram* decision = nullptr;
  prometheus::Histogram* netns_open = nullptr;
  prometheus::Histogram* rules = nullptr;
  prometheus::Histogram* zds_add = nullptr;
  prometheus::Histogram* probe_set = nullptr;
};

// ambient_zds_round_trip_duration_seconds: send to ack, by message type.
struct ZdsMetrics {
  prometheus::Histogram* add = nullptr;
  prometheus::Histogram* del = nullptr;
  prometheus::Histogram* keep = nullptr;
  prometheus::Histogram* snapshot_sent = nullptr;
};

// istio_cni_installs_total{result} and istio_cni_install_ready.
struct InstallMetrics {
  prometheus::Counter* success = nullptr;
  prometheus::Counter* copy_binaries_failure = nullptr;
  prometheus::Counter* create_kubeconfig_failure = nullptr;
  prometheus::Counter* create_cni_config_failure = nullptr;
  prometheus::Gauge* ready = nullptr;
};

// nodeagent_reconcile_events_total{type}.
struct ReconcileMetrics {
  prometheus::Counter* add = nullptr;
  prometheus::Counter* update = nullptr;
  prometheus::Counter* del = nullptr;
};

inline void inc(prometheus::Counter* c) {
  if (c) c->Increment();
}

inline void set(prometheus::Gauge* g, double v) {
  if (g) g->Set(v);
}

// Observes the elapsed seconds into `h` (when there is one) as it goes out
// of scope, and stores them in *out when given.
class Timer {
 public:
  explicit Timer(prometheus::Histogram* h, double* out = nullptr)
      : h_(h), out_(out), start_(std::chrono::steady_clock::now()) {}
  ~Timer() {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (h_) h_->Observe(s);
    if (out_) *out_ = s;
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

 private:
  prometheus::Histogram* h_;
  double* out_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ambient::metrics
