// Minimal stderr logger for the ztunnel emulator. Tests read this output
// when a scenario fails, so every event is one self-contained line written
// with a single write(2): lines from the ZDS thread and the listener thread
// never interleave mid-line.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ambient::test {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

std::optional<LogLevel> parse_log_level(std::string_view text);
void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
void log_line(LogLevel level, std::string_view message);

inline void log_debug(std::string_view m) { log_line(LogLevel::Debug, m); }
inline void log_info(std::string_view m) { log_line(LogLevel::Info, m); }
inline void log_warn(std::string_view m) { log_line(LogLevel::Warn, m); }
inline void log_error(std::string_view m) { log_line(LogLevel::Error, m); }

}  // namespace ambient::test
