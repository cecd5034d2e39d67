#include "metrics/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>

#include "lib/file.h"
#include "log/log.h"

namespace ambient::metrics {

namespace {

prometheus::MetricFamily one_value(const char* name, const char* help, prometheus::MetricType type,
                                   double value) {
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return {.name = name, .help = help, .type = type, .metric = {std::move(m)}};
}

// Space-separated fields of `text`.
std::vector<std::string_view> fields(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find_first_of(" \n", i);
    if (j == std::string_view::npos) j = text.size();
    if (j > i) out.push_back(text.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

Result<double> number(std::string_view field, const char* what) {
  unsigned long long v = 0;
  auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (ec != std::errc() || end != field.data() + field.size()) {
    return make_error(Errc::InvalidArgument,
                      std::string(what) + ": not a number: '" + std::string(field) + "'");
  }
  return static_cast<double>(v);
}

// Entries of <proc>/self/fd, not counting the one this count opens.
Result<double> open_fds(const std::string& proc) {
  const std::string path = proc + "/self/fd";
  DIR* d = ::opendir(path.c_str());
  if (!d) return sys_error("open " + path);
  const std::string own = std::to_string(::dirfd(d));
  double n = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name != "." && name != ".." && name != own) ++n;
  }
  ::closedir(d);
  return n;
}

void log_unread(const char* what, const Error& e) {
  log::debug("metrics: {} left out of this scrape: {}", what, e.describe());
}

}  // namespace

Result<ProcStat> parse_proc_stat(std::string_view text, long ticks, long page_size) {
  // The command name (field 2) is in parentheses and may hold spaces or
  // parentheses itself: the fields that follow start after the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos) {
    return make_error(Errc::InvalidArgument, "stat line without a command name");
  }
  const auto f = fields(text.substr(close + 1));
  // f[0] is field 3 (state); the fields used here are 14, 15, 22, 23, 24.
  if (f.size() < 22) {
    return make_error(Errc::InvalidArgument,
                      "stat line with " + std::to_string(f.size() + 2) + " fields, want >= 24");
  }
  AMBIENT_ASSIGN_OR_RETURN(double utime, number(f[11], "utime"));
  AMBIENT_ASSIGN_OR_RETURN(double stime, number(f[12], "stime"));
  AMBIENT_ASSIGN_OR_RETURN(double start, number(f[19], "starttime"));
  AMBIENT_ASSIGN_OR_RETURN(double vsize, number(f[20], "vsize"));
  AMBIENT_ASSIGN_OR_RETURN(double rss, number(f[21], "rss"));
  const double hz = static_cast<double>(ticks);
  return ProcStat{.cpu_seconds = (utime + stime) / hz,
                  .virtual_bytes = vsize,
                  .resident_bytes = rss * static_cast<double>(page_size),
                  .start_after_boot_s = start / hz};
}

Result<double> parse_boot_time(std::string_view proc_stat) {
  size_t at = 0;
  while (at < proc_stat.size()) {
    size_t end = proc_stat.find('\n', at);
    if (end == std::string_view::npos) end = proc_stat.size();
    const auto line = fields(proc_stat.substr(at, end - at));
    if (line.size() == 2 && line[0] == "btime") return number(line[1], "btime");
    at = end + 1;
  }
  return make_error(Errc::NotFound, "no btime line");
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  auto stat = read_whole_file(proc_ + "/self/stat");
  Result<ProcStat> parsed =
      stat ? parse_proc_stat(*stat, ::sysconf(_SC_CLK_TCK), ::sysconf(_SC_PAGESIZE))
           : Result<ProcStat>(std::move(stat).error());
  if (parsed) {
    out.push_back(one_value("process_cpu_seconds_total",
                            "Total user and system CPU time spent in seconds.", MetricType::Counter,
                            parsed->cpu_seconds));
    out.push_back(one_value("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                            MetricType::Gauge, parsed->virtual_bytes));
    out.push_back(one_value("process_resident_memory_bytes", "Resident memory size in bytes.",
                            MetricType::Gauge, parsed->resident_bytes));
    auto boot = read_whole_file(proc_ + "/stat");
    auto btime = boot ? parse_boot_time(*boot) : Result<double>(std::move(boot).error());
    if (btime) {
      out.push_back(one_value("process_start_time_seconds",
                              "Start time of the process since unix epoch in seconds.",
                              MetricType::Gauge, *btime + parsed->start_after_boot_s));
    } else {
      log_unread("process_start_time_seconds", std::move(btime).error().context("boot time"));
    }
  } else {
    log_unread("process CPU and memory", parsed.error());
  }
  if (auto fds = open_fds(proc_)) {
    out.push_back(
        one_value("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, *fds));
  } else {
    log_unread("process_open_fds", fds.error());
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.push_back(one_value("process_max_fds", "Maximum number of open file descriptors.",
                            MetricType::Gauge, static_cast<double>(lim.rlim_cur)));
  }
  return out;
}

}  // namespace ambient::metrics
