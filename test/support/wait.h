// Waiting for tests: state that lands asynchronously (after an ack, a
// restart, a rewrite) is polled for with a deadline.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace ambient::test {

// Polls `pred` every `poll` until it holds or `timeout` has passed, then
// asks once more: whether it held.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(2),
                       std::chrono::microseconds poll = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(poll);
  }
  return pred();
}

}  // namespace ambient::test
