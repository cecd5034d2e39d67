// Agent logging: a thin facade over spdlog. Lines follow upstream's text
// format (time, level, scope, message, then key=value labels) so existing
// log tooling keeps working.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace ambient::log {

// Sets the level ("debug", "info", "warn", "error") and the line format.
void init(std::string_view level);

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
