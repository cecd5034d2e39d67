#include "metrics/histogram.h"

#include <cstdio>

namespace ambient::metrics {

void Histogram::observe(double seconds) {
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) buckets_[i].fetch_add(1, std::memory_order_relaxed);
  }
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(seconds * 1e9), std::memory_order_relaxed);
}

std::string Histogram::render(const std::string& name, const std::string& labels) const {
  std::string out;
  const std::string sep = labels.empty() ? "" : labels + ",";
  char buf[64];
  for (size_t i = 0; i < kBounds.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%g", kBounds[i]);
    out += name + "_bucket{" + sep + "le=\"" + buf + "\"} " + std::to_string(buckets_[i].load()) +
           "\n";
  }
  out += name + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(count_.load()) + "\n";
  std::snprintf(buf, sizeof buf, "%.9f", static_cast<double>(sum_ns_.load()) / 1e9);
  out += name + "_sum" + (labels.empty() ? "" : "{" + labels + "}") + " " + buf + "\n";
  out += name + "_count" + (labels.empty() ? "" : "{" + labels + "}") + " " +
         std::to_string(count_.load()) + "\n";
  return out;
}

}  // namespace ambient::metrics
