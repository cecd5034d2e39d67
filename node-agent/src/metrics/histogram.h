// Prometheus histograms for the agent's own latency metrics (upstream has
// none: istio/istio#60472). Lock-free observe(); text exposition format.
// Upstream's metric names are kept elsewhere; ours use the `ambient_` prefix.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <string>

namespace ambient::metrics {

class Histogram {
 public:
  // Upper bounds in seconds, from 100 µs to 10 s.
  static constexpr std::array<double, 14> kBounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0};
  void observe(double seconds);
  // `name{labels,le="..."}` lines plus _sum and _count.
  std::string render(const std::string& name, const std::string& labels = "") const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size()> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
};

// Observes the elapsed time into `h` when it goes out of scope, and also
// stores it (seconds) in *out when given.
class Timer {
 public:
  explicit Timer(Histogram& h, double* out = nullptr)
      : h_(h), out_(out), start_(std::chrono::steady_clock::now()) {}
  ~Timer() {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    h_.observe(s);
    if (out_) *out_ = s;
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

 private:
  Histogram& h_;
  double* out_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ambient::metrics
