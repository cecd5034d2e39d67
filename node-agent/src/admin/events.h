// The admin API's event stream (WatchEvents): enrollments, removals, drift
// and ZDS changes, fanned out to every watching client.
//
// Publishers are the enrollment pipeline and the agent's own threads, so
// publish() never waits on a client: each subscriber has a bounded queue,
// and a client too slow to drain it loses events, which it is told of by
// one `dropped` event with the count once it catches up. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "admin.pb.h"

namespace ambient::admin {

// RFC 3339 in UTC with milliseconds, as every time in the admin API.
std::string rfc3339(std::chrono::system_clock::time_point t);

class EventHub {
 public:
  static constexpr size_t kQueueLimit = 1024;

  class Subscription {
   public:
    // The next event, or nullopt after `timeout` or once closed.
    std::optional<v1::Event> next(std::chrono::milliseconds timeout);
    void close();

   private:
    friend class EventHub;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<v1::Event> queue_;
    size_t dropped_ = 0;
    bool closed_ = false;
  };

  std::shared_ptr<Subscription> subscribe();
  void unsubscribe(const std::shared_ptr<Subscription>& s);
  // Stamps the time when the event has none.
  void publish(v1::Event e);
  // Wakes every subscriber for good (agent shutdown).
  void close_all();
  size_t subscribers() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Subscription>> subs_;
};

// An event for a pod.
v1::Event pod_event(std::string kind, const std::string& ns, const std::string& name,
                    const std::string& uid, std::string message);

}  // namespace ambient::admin
