// Small text helpers with the semantics our inputs need: Go's
// strconv.ParseBool (upstream reads env vars and annotations with it) and
// comma lists as upstream splits them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ambient::text {

// Go's strconv.ParseBool: 1 t T TRUE true True, 0 f F FALSE false False.
inline std::optional<bool> parse_go_bool(std::string_view v) {
  for (std::string_view t : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (v == t) return true;
  }
  for (std::string_view f : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (v == f) return false;
  }
  return std::nullopt;
}

// "a, b,,c " -> {"a", "b", "c"}: items trimmed of spaces and tabs, empty
// items dropped.
inline std::vector<std::string> split_list(std::string_view v) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= v.size()) {
    size_t comma = v.find(',', start);
    if (comma == std::string_view::npos) comma = v.size();
    std::string_view item = v.substr(start, comma - start);
    const size_t b = item.find_first_not_of(" \t");
    if (b != std::string_view::npos) {
      item = item.substr(b, item.find_last_not_of(" \t") - b + 1);
      out.emplace_back(item);
    }
    start = comma + 1;
  }
  return out;
}

// The first line of a command's output, without trailing spaces.
inline std::string first_line(std::string_view text) {
  auto s = std::string(text.substr(0, text.find('\n')));
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

inline std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// A JSON string literal, quotes included, for `s`: control characters are
// escaped, other bytes pass through (UTF-8 stays readable).
inline std::string json_quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace ambient::text
