#include "log/plugin_log.h"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "lib/cni_event.h"

namespace ambient::log {

namespace {

using Json = nlohmann::ordered_json;

// Reads `len` decimal digits at `pos`.
bool digits_at(std::string_view s, size_t pos, size_t len, int& out) {
  if (pos + len > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + len; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// ".123456789" at `pos` (optional), as microseconds; advances `pos`.
bool fraction_at(std::string_view s, size_t& pos, int64_t& us) {
  us = 0;
  if (pos >= s.size() || s[pos] != '.') return true;
  size_t n = 0;
  for (++pos; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++n) {
    if (n < 6) us = us * 10 + (s[pos] - '0');
  }
  for (size_t i = n; i < 6; ++i) us *= 10;
  return n > 0;
}

// "Z" or "+hh:mm" / "-hh:mm" at `pos`, the whole rest of `s`, as the
// offset east of UTC in minutes.
bool zone_at(std::string_view s, size_t pos, int& offset) {
  offset = 0;
  if (pos + 1 == s.size() && s[pos] == 'Z') return true;
  int h = 0, m = 0;
  if (pos + 6 != s.size() || (s[pos] != '+' && s[pos] != '-') || s[pos + 3] != ':' ||
      !digits_at(s, pos + 1, 2, h) || !digits_at(s, pos + 4, 2, m) || h > 23 || m > 59) {
    return false;
  }
  offset = (s[pos] == '-' ? -1 : 1) * (h * 60 + m);
  return true;
}

std::optional<Level> line_level(std::string_view name) {
  static constexpr std::array<std::pair<std::string_view, Level>, 4> kLevels = {
      {{"debug", Level::Debug},
       {"info", Level::Info},
       {"warn", Level::Warn},
       {"error", Level::Error}}};
  for (const auto& [n, l] : kLevels) {
    if (n == name) return l;
  }
  return std::nullopt;
}

Result<std::string> string_field(const Json& line, const char* key) {
  auto it = line.find(key);
  if (it == line.end()) return make_error(Errc::InvalidArgument, std::string("no ") + key);
  if (!it->is_string()) {
    return make_error(Errc::InvalidArgument,
                      std::string(key) + " is a " + it->type_name() + ", not a string");
  }
  return it->get<std::string>();
}

Label label(const std::string& key, const Json& value) {
  std::string json = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  return Label{key, value.is_string() ? value.get<std::string>() : json, json};
}

}  // namespace

Result<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view s) {
  using namespace std::chrono;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, offset = 0;
  int64_t us = 0;
  size_t pos = 19;
  const bool shape = s.size() > pos && digits_at(s, 0, 4, y) && s[4] == '-' &&
                     digits_at(s, 5, 2, mo) && s[7] == '-' && digits_at(s, 8, 2, d) &&
                     s[10] == 'T' && digits_at(s, 11, 2, h) && s[13] == ':' &&
                     digits_at(s, 14, 2, mi) && s[16] == ':' && digits_at(s, 17, 2, sec) &&
                     fraction_at(s, pos, us) && zone_at(s, pos, offset);
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!shape || !ymd.ok() || h > 23 || mi > 59 || sec > 59) {
    return make_error(Errc::InvalidArgument, "time \"" + std::string(s) + "\" is not RFC 3339");
  }
  const auto t =
      sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} + microseconds{us} - minutes{offset};
  return time_point_cast<system_clock::duration>(t);
}

Result<std::optional<PluginLine>> parse_plugin_line(std::string_view text) {
  Json line = Json::parse(text, nullptr, false);
  if (line.is_discarded() || !line.is_object()) {
    return make_error(Errc::InvalidArgument, "not a JSON object");
  }
  AMBIENT_ASSIGN_OR_RETURN(std::string msg, string_field(line, "msg"));
  AMBIENT_ASSIGN_OR_RETURN(std::string level_name, string_field(line, "level"));
  AMBIENT_ASSIGN_OR_RETURN(std::string time_text, string_field(line, "time"));
  AMBIENT_ASSIGN_OR_RETURN(auto time, parse_rfc3339(time_text));
  const std::optional<Level> level = line_level(level_name);
  if (!level) return std::optional<PluginLine>();
  PluginLine out{.time = time, .level = *level, .msg = std::move(msg), .labels = {}};
  for (const auto& [key, value] : line.items()) {
    if (key == "msg" || key == "level" || key == "time" || key == "scope") continue;
    out.labels.push_back(label(key, value));
  }
  return std::optional<PluginLine>(std::move(out));
}

PluginBatch parse_plugin_log(std::string_view body) {
  PluginBatch batch;
  auto malformed = [&](std::string problem) {
    if (batch.malformed++ == 0) batch.first_problem = std::move(problem);
  };
  const Json lines = Json::parse(body, nullptr, false);
  if (lines.is_discarded() || !lines.is_array()) {
    malformed("the body is not a JSON array of strings");
    return batch;
  }
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = "line " + std::to_string(i + 1) + ": ";
    if (!lines[i].is_string()) {
      malformed(where + "a " + lines[i].type_name() + ", not a string");
      continue;
    }
    auto line = parse_plugin_line(lines[i].get<std::string>());
    if (!line) {
      malformed(where + line.error().describe());
    } else if (*line) {
      batch.lines.push_back(std::move(**line));
    }
  }
  return batch;
}

http::Response handle_plugin_log(const http::Request& req) {
  if (req.target != cni::kPluginLogPath) return {404, "404 page not found\n"};
  const PluginBatch batch = parse_plugin_log(req.body);
  for (const PluginLine& l : batch.lines) write_plugin_line(l.time, l.level, l.msg, l.labels);
  if (batch.malformed > 0) {
    warn("{}: skipped {} malformed plugin log line(s); {}", cni::kPluginLogSocket, batch.malformed,
         batch.first_problem);
  }
  return {200, ""};
}

}  // namespace ambient::log
