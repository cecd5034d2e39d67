#include "logger.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <utility>

#include "lib/cni_event.h"
#include "lib/json_fields.h"
#include "lib/unique_fd.h"

namespace ambient::cni {

namespace {

std::string now() {
  using namespace std::chrono;
  // Not strftime nor gmtime_r: both read the time zone file
  // (/etc/localtime) on first use, seven system calls on every plugin run
  // for a UTC timestamp. The calendar arithmetic needs no file.
  const auto t = floor<microseconds>(system_clock::now());
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02ld.%06ldZ",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<long>(hms.hours().count()),
                static_cast<long>(hms.minutes().count()), static_cast<long>(hms.seconds().count()),
                static_cast<long>(hms.subseconds().count()));
  return buf;
}

// Text from the runtime (names, paths, error messages) is not checked for
// UTF-8; a log line must never be what makes the plugin fail.
std::string dump(const json::Json& j) {
  return j.dump(-1, ' ', false, json::Json::error_handler_t::replace);
}

}  // namespace

void Logger::set_level(std::string_view name) {
  static const std::pair<std::string_view, Level> kLevels[] = {{"debug", Debug}, {"info", Info},
                                                               {"warn", Warn},   {"error", Error},
                                                               {"fatal", None},  {"none", None}};
  for (auto [n, l] : kLevels) {
    if (n == name) {
      level_ = l;
      return;
    }
  }
  log(Warn, "unknown plugin_log_level \"" + std::string(name) + "\": logging turned off", "");
  level_ = None;
}

void Logger::log(Level l, const std::string& msg, const std::string& pod) {
  if (l < level_ || l == None) return;
  static const char* kNames[] = {"debug", "info", "warn", "error"};
  json::Json j = json::Json::object();
  j["level"] = kNames[l];
  j["time"] = now();
  j["msg"] = msg;
  if (!pod.empty()) j["pod"] = pod;
  std::string line = dump(j) + "\n";
  err_(line);
  if (keep_) kept_.push_back(std::move(line));
}

std::string log_body(const std::vector<std::string>& lines) {
  json::Json a = json::Json::array();
  for (const auto& l : lines) a.push_back(l);
  return dump(a);
}

std::string log_request(std::string_view body) {
  std::string req = "POST " + std::string(kPluginLogPath) +
                    " HTTP/1.1\r\nHost: unix\r\nUser-Agent: istio-cni\r\n"
                    "Content-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  req.append(body);
  return req;
}

void send_log(const std::string& path, std::string_view body, std::chrono::milliseconds budget) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + budget;
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return;
  // A non-blocking Unix stream connect is decided at once: queued on the
  // listener (accepted or not), or refused, EAGAIN when its backlog is full.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return;
  const std::string req = log_request(body);
  std::string_view rest = req;
  while (!rest.empty()) {
    // MSG_NOSIGNAL: a reader that went away must not kill the plugin.
    const ssize_t n = ::send(fd.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n > 0) {
      rest.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return;
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(left)) == 0) return;  // an error is seen by send
  }
}

}  // namespace ambient::cni
