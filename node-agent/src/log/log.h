// Agent logging: a thin facade over spdlog in Istio's formats
// (docs/node-agent.md#logging). Text lines are
//   <UTC time, microseconds>\t<level>\t<scope>\t<message>[\t<k=v k=v>]
// and with --log_as_json one object per line with the keys time, level,
// scope and msg (and labels as keys), so existing log tooling keeps working.
// Each scope is a logger of its own with its own level: log::info() and
// friends write the agent's (cni-agent), log::install() the installer's;
// the plugin's lines arrive whole (write_plugin_line).
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <span>
#include <string>
#include <string_view>

#include "lib/result.h"

namespace ambient::log {

// Istio's levels; None silences a scope.
enum class Level { Debug, Info, Warn, Error, None };

// What --log_output_level sets, per scope of ours: cni-agent (the agent's
// own lines), cni-plugin (the plugin's) and install (the installer's).
// "default" sets every scope not named.
struct Levels {
  Level agent = Level::Info;
  Level plugin = Level::Info;
  Level install = Level::Info;
};

// Istio's syntax: a bare level ("debug") or "scope:level" items separated
// by commas ("default:info,cni-agent:debug"); levels debug, info, warn,
// error, none. An unknown scope or level is an error naming it.
Result<Levels> parse_output_levels(std::string_view spec);

// UTC with microseconds, as Istio writes it: 2026-12-06T05:00:00.123456Z.
std::string format_time(std::chrono::system_clock::time_point when);

// A key=value attached to a line (the plugin's pod, ...): the value as
// text (a string unquoted) for text lines, and as JSON for JSON lines.
struct Label {
  std::string key, text, json;
};

// One line as it is written (no trailing newline): for tests, and the one
// place the two formats are defined. Labels follow the message as Istio
// writes them: after a tab, space-separated, in text; as keys in JSON.
std::string format_line(std::string_view time, Level level, std::string_view scope,
                        std::string_view msg, bool json, std::span<const Label> labels = {});

// Sets every scope's level and the format; lines go to `sink` (stdout when
// null: tests pass one to read what was written). Called before any thread
// logs; until then lines are text at info on stdout.
void init(const Levels& levels, bool json, spdlog::sink_ptr sink = nullptr);

// The scopes' loggers, for log::install().info(...) and the like.
spdlog::logger& agent();
spdlog::logger& install();

// Writes one of the plugin's lines under the cni-plugin scope with its own
// time, if that scope's level lets `level` through.
void write_plugin_line(std::chrono::system_clock::time_point time, Level level,
                       std::string_view msg, std::span<const Label> labels);

template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  agent().debug(f, std::forward<Args>(args)...);
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  agent().info(f, std::forward<Args>(args)...);
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  agent().warn(f, std::forward<Args>(args)...);
}
template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  agent().error(f, std::forward<Args>(args)...);
}

}  // namespace ambient::log
