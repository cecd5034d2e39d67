// What an accept loop does when accepting fails for want of fds or
// memory: the connection stays queued and the socket readable, so
// accepting again at once would spin a core for as long as that lasts.
// The loop waits kRetry instead; this says so once, and once more when
// accepting works again.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>

#include "log/log.h"

namespace ambient::http {

class AcceptBackoff {
 public:
  static constexpr std::chrono::milliseconds kRetry{100};

  // `name`: which socket, for the log ("CNI event socket").
  explicit AcceptBackoff(std::string name) : name_(std::move(name)) {}

  // Whether accept's `err` (an errno) means waiting kRetry before the next
  // attempt; anything else is that one peer's trouble.
  bool must_wait(int err) {
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) return false;
    if (!starved_) {
      log::warn("{}: cannot accept connections: {}; retrying every {} ms", name_,
                std::strerror(err), kRetry.count());
    }
    starved_ = true;
    return true;
  }

  void accepted() {
    if (starved_) log::info("{}: accepting connections again", name_);
    starved_ = false;
  }

 private:
  std::string name_;
  bool starved_ = false;
};

}  // namespace ambient::http
