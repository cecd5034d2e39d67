// The plugin's log lines, which it sends to <run dir>/log.sock at the end
// of each run (docs/node-agent.md#plugin-logs): POST /log with a JSON array
// of strings, each one of its JSON log lines. Each good line is written
// again under the cni-plugin scope, with its own time, level and labels.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>  // before Boost.Asio, whose awaitable.hpp uses std::exchange
#include <vector>

#include "http/server.h"
#include "lib/result.h"
#include "log/log.h"

namespace ambient::log {

// A larger body is answered 413 and nothing of it is written: a plugin run
// logs a few hundred bytes.
inline constexpr size_t kPluginLogBodyLimit = size_t{1} << 20;

struct PluginLine {
  std::chrono::system_clock::time_point time;
  Level level = Level::Info;
  std::string msg;
  std::vector<Label> labels;  // in the line's order
};

// RFC 3339 with optional fractional seconds ("2024-01-01T00:00:00.356374Z",
// "2024-01-01T02:00:00+02:00"), kept to the microsecond.
Result<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s);

// One line: a JSON object with string msg, level and time (RFC 3339); every
// other key is a label, but scope, which the cni-plugin scope replaces.
// nullopt: a line dropped on purpose (level fatal, or one that is not
// debug, info, warn or error). An error says what is wrong with it.
Result<std::optional<PluginLine>> parse_plugin_line(std::string_view line);

// One request's body: the lines to write, in order, and the malformed ones.
struct PluginBatch {
  std::vector<PluginLine> lines;
  size_t malformed = 0;
  std::string first_problem;  // what was wrong with the first malformed one
};
PluginBatch parse_plugin_log(std::string_view body);

// /log answers 200 with an empty body whatever the lines (a plugin never
// waits for the answer, and an error would only reach the plugin's own
// stderr); malformed lines cost one cni-agent warning per request. Any
// other path is 404.
http::Response handle_plugin_log(const http::Request& req);

}  // namespace ambient::log
