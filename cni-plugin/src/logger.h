// The plugin's log (docs/cni-plugin.md#logging): JSON lines with upstream's
// keys on stderr (stdout carries only the CNI result), and, once the config
// names a run dir holding the agent's log.sock, the same lines kept and sent
// to the agent in one POST /log at the end of the run.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ambient::cni {

// Everything the agent's log channel may cost one plugin run, whatever
// state the agent is in (docs/cni-plugin.md#log-channel).
inline constexpr std::chrono::milliseconds kLogSendBudget{100};

class Logger {
 public:
  enum Level { Debug = 0, Info, Warn, Error, None };

  explicit Logger(const std::function<void(std::string_view)>& err) : err_(err) {}

  // plugin_log_level: debug, info, warn, error; fatal and none turn logging
  // off, anything else too, with one warning.
  void set_level(std::string_view name);
  // From now on every line written is kept as well, for the agent.
  void keep_lines() { keep_ = true; }
  void log(Level l, const std::string& msg, const std::string& pod);
  // The kept lines, each with its trailing "\n", as written to stderr.
  const std::vector<std::string>& kept() const { return kept_; }

 private:
  const std::function<void(std::string_view)>& err_;
  Level level_ = Info;
  bool keep_ = false;
  std::vector<std::string> kept_;
};

// The body of POST /log: a JSON array of the lines, as strings.
std::string log_body(const std::vector<std::string>& lines);

// The whole HTTP/1.1 request carrying `body`, asking the agent to close.
std::string log_request(std::string_view body);

// Writes log_request(body) to the Unix stream socket `path` and closes it
// without waiting for the answer: data written before the close stays
// readable by the agent. Never blocks past `budget` and never fails: a
// missing socket, one nobody listens on, a full backlog, a slow or
// vanished reader all just end the attempt (the lines are on stderr too).
void send_log(const std::string& path, std::string_view body, std::chrono::milliseconds budget);

}  // namespace ambient::cni
