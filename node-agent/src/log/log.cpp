#include "log/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <array>
#include <atomic>
#include <memory>
#include <optional>

#include "lib/text.h"

namespace ambient::log {

namespace {

constexpr std::array<std::pair<std::string_view, Level>, 5> kLevels = {{{"debug", Level::Debug},
                                                                        {"info", Level::Info},
                                                                        {"warn", Level::Warn},
                                                                        {"error", Level::Error},
                                                                        {"none", Level::None}}};

std::string_view level_name(Level l) {
  for (const auto& [name, level] : kLevels) {
    if (level == l) return name;
  }
  return "info";
}

Result<Level> parse_level(std::string_view s, std::string_view item) {
  for (const auto& [name, level] : kLevels) {
    if (s == name) return level;
  }
  return make_error(Errc::InvalidArgument, "log level \"" + std::string(s) + "\" in \"" +
                                               std::string(item) +
                                               "\" is not one of debug, info, warn, error, none");
}

Level from_spdlog(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return Level::Debug;
    case spdlog::level::info:
      return Level::Info;
    case spdlog::level::warn:
      return Level::Warn;
    case spdlog::level::err:
    case spdlog::level::critical:
      return Level::Error;
    case spdlog::level::off:
    case spdlog::level::n_levels:
      break;
  }
  return Level::None;
}

spdlog::level::level_enum to_spdlog(Level l) {
  switch (l) {
    case Level::Debug:
      return spdlog::level::debug;
    case Level::Info:
      return spdlog::level::info;
    case Level::Warn:
      return spdlog::level::warn;
    case Level::Error:
      return spdlog::level::err;
    case Level::None:
      break;
  }
  return spdlog::level::off;
}

constexpr std::string_view kPluginScope = "cni-plugin";

// The whole line in one flag, so both formats are written by format_line.
class LineFormatter : public spdlog::custom_flag_formatter {
 public:
  explicit LineFormatter(bool json) : json_(json) {}
  // spdlog only fills `tm` for patterns with time flags; ours has none.
  void format(const spdlog::details::log_msg& msg, const std::tm& /*tm*/,
              spdlog::memory_buf_t& dest) override {
    const std::string_view scope(msg.logger_name.data(), msg.logger_name.size());
    // The plugin's lines come whole from write_plugin_line: they carry
    // labels, which spdlog's message has no room for.
    if (scope == kPluginScope) {
      dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
      return;
    }
    const std::string time = format_time(msg.time);
    const std::string line =
        format_line(time, from_spdlog(msg.level), scope,
                    std::string_view(msg.payload.data(), msg.payload.size()), json_);
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<LineFormatter>(json_);
  }

 private:
  bool json_;
};

std::unique_ptr<spdlog::formatter> make_formatter(bool json) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  formatter->add_flag<LineFormatter>('*', json).set_pattern("%*");
  return formatter;
}

// One logger per scope, named after it, all writing to one sink. They live
// as long as the process, so references to them never dangle; init only
// reconfigures them.
struct Loggers {
  std::shared_ptr<spdlog::logger> agent, install, plugin;
  std::atomic<bool> json{false};

  Loggers() {
    auto sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
    sink->set_formatter(make_formatter(false));
    agent = std::make_shared<spdlog::logger>("cni-agent", sink);
    install = std::make_shared<spdlog::logger>("install", sink);
    plugin = std::make_shared<spdlog::logger>(std::string(kPluginScope), sink);
  }
};

// Never destroyed: a thread may still log while statics are torn down.
Loggers& loggers() {
  static Loggers* l = new Loggers;
  return *l;
}

}  // namespace

Result<Levels> parse_output_levels(std::string_view spec) {
  Levels out;
  std::optional<Level> agent, plugin, install;
  std::optional<Level> fallback;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    const std::string_view item = spec.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    start = comma == std::string_view::npos ? spec.size() + 1 : comma + 1;
    if (item.empty()) continue;
    const size_t colon = item.find(':');
    if (colon == std::string_view::npos) {  // a bare level is the default scope's
      AMBIENT_ASSIGN_OR_RETURN(fallback, parse_level(item, item));
      continue;
    }
    const std::string_view scope = item.substr(0, colon);
    AMBIENT_ASSIGN_OR_RETURN(Level level, parse_level(item.substr(colon + 1), item));
    if (scope == "default") {
      fallback = level;
    } else if (scope == "cni-agent") {
      agent = level;
    } else if (scope == "cni-plugin") {
      plugin = level;
    } else if (scope == "install") {
      install = level;
    } else {
      return make_error(Errc::InvalidArgument,
                        "log scope \"" + std::string(scope) + "\" in \"" + std::string(item) +
                            "\" is not one of default, cni-agent, cni-plugin, install");
    }
  }
  const Level d = fallback.value_or(Level::Info);
  out.agent = agent.value_or(d);
  out.plugin = plugin.value_or(d);
  out.install = install.value_or(d);
  return out;
}

std::string format_time(std::chrono::system_clock::time_point when) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(when.time_since_epoch()) % 1000000;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us.count());
}

std::string format_line(std::string_view time, Level level, std::string_view scope,
                        std::string_view msg, bool json, std::span<const Label> labels) {
  std::string out;
  if (!json) {
    out.reserve(time.size() + scope.size() + msg.size() + 10);
    out.append(time).append("\t").append(level_name(level)).append("\t");
    out.append(scope).append("\t").append(msg);
    for (size_t i = 0; i < labels.size(); ++i) {
      out.append(i == 0 ? "\t" : " ").append(labels[i].key).append("=").append(labels[i].text);
    }
    return out;
  }
  out += "{\"time\":";
  out += text::json_quote(time);
  out += ",\"level\":";
  out += text::json_quote(level_name(level));
  out += ",\"scope\":";
  out += text::json_quote(scope);
  out += ",\"msg\":";
  out += text::json_quote(msg);
  for (const Label& l : labels) {
    out += ',';
    out += text::json_quote(l.key);
    out += ':';
    out += l.json;
  }
  out += '}';
  return out;
}

void init(const Levels& levels, bool json, spdlog::sink_ptr sink) {
  if (!sink) sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  sink->set_formatter(make_formatter(json));
  Loggers& l = loggers();
  l.json = json;
  for (auto [logger, level] : {std::pair{l.agent.get(), levels.agent},
                               {l.install.get(), levels.install},
                               {l.plugin.get(), levels.plugin}}) {
    logger->sinks() = {sink};
    logger->set_level(to_spdlog(level));
    logger->flush_on(spdlog::level::trace);
  }
}

spdlog::logger& agent() { return *loggers().agent; }
spdlog::logger& install() { return *loggers().install; }

void write_plugin_line(std::chrono::system_clock::time_point time, Level level,
                       std::string_view msg, std::span<const Label> labels) {
  Loggers& l = loggers();
  const auto spd = to_spdlog(level);
  if (level == Level::None || !l.plugin->should_log(spd)) return;
  l.plugin->log(time, spdlog::source_loc{}, spd,
                format_line(format_time(time), level, kPluginScope, msg, l.json, labels));
}

}  // namespace ambient::log
