// Agent logging: a thin facade over spdlog in Istio's formats
// (docs/node-agent.md#logging). Text lines are
//   <UTC time, microseconds>\t<level>\t<scope>\t<message>
// and with --log_as_json one object per line with the keys time, level,
// scope and msg, so existing log tooling keeps working.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
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

// One line as it is written (no trailing newline): for tests, and the one
// place the two formats are defined.
std::string format_line(std::string_view time, Level level, std::string_view scope,
                        std::string_view msg, bool json);

void init(const Levels& levels, bool json);

template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::debug(f, std::forward<Args>(args)...);
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::info(f, std::forward<Args>(args)...);
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::warn(f, std::forward<Args>(args)...);
}
template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::error(f, std::forward<Args>(args)...);
}

}  // namespace ambient::log
