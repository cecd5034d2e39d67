// The standard process_* metrics every Prometheus client library exports
// (CPU, memory, file descriptors, start time), read from procfs at each
// scrape so they cost nothing between scrapes (docs/node-agent.md#metrics).
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <string>
#include <string_view>
#include <vector>

#include "lib/result.h"

namespace ambient::metrics {

// What /proc/<pid>/stat tells, in the metrics' units.
struct ProcStat {
  double cpu_seconds = 0;         // user + system time
  double virtual_bytes = 0;       // vsize
  double resident_bytes = 0;      // rss pages × page size
  double start_after_boot_s = 0;  // starttime, seconds after boot
};

// `text`: the whole /proc/<pid>/stat line. `ticks` = sysconf(_SC_CLK_TCK).
Result<ProcStat> parse_proc_stat(std::string_view text, long ticks, long page_size);

// The `btime` line of /proc/stat: boot time, seconds since the epoch.
Result<double> parse_boot_time(std::string_view proc_stat);

class ProcessCollector : public prometheus::Collectable {
 public:
  // `proc`: where procfs is mounted (a test points it elsewhere).
  explicit ProcessCollector(std::string proc = "/proc") : proc_(std::move(proc)) {}

  // A value that cannot be read is left out of this scrape (logged at
  // debug), never reported as 0.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::string proc_;
};

}  // namespace ambient::metrics
