#include "admin/events.h"

#include <algorithm>
#include <ctime>

#include <fmt/format.h>

namespace ambient::admin {

std::string rfc3339(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

std::optional<v1::Event> EventHub::Subscription::next(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return closed_ || !queue_.empty() || dropped_ > 0; });
  if (dropped_ > 0) {
    // Reported where the gap is: after what was queued before it.
    v1::Event e;
    e.set_time(rfc3339(std::chrono::system_clock::now()));
    e.set_kind("dropped");
    e.set_message(fmt::format("{} events dropped: this client read too slowly", dropped_));
    if (queue_.empty()) {
      dropped_ = 0;
      return e;
    }
  }
  if (queue_.empty()) return std::nullopt;
  v1::Event e = std::move(queue_.front());
  queue_.pop_front();
  return e;
}

void EventHub::Subscription::close() {
  std::lock_guard lk(mu_);
  closed_ = true;
  cv_.notify_all();
}

std::shared_ptr<EventHub::Subscription> EventHub::subscribe() {
  auto s = std::make_shared<Subscription>();
  std::lock_guard lk(mu_);
  subs_.push_back(s);
  return s;
}

void EventHub::unsubscribe(const std::shared_ptr<Subscription>& s) {
  std::lock_guard lk(mu_);
  subs_.erase(std::remove(subs_.begin(), subs_.end(), s), subs_.end());
}

void EventHub::publish(v1::Event e) {
  if (e.time().empty()) e.set_time(rfc3339(std::chrono::system_clock::now()));
  std::lock_guard lk(mu_);
  for (const auto& s : subs_) {
    std::lock_guard slk(s->mu_);
    if (s->closed_) continue;
    if (s->queue_.size() >= kQueueLimit) {
      ++s->dropped_;
    } else {
      s->queue_.push_back(e);
    }
    s->cv_.notify_all();
  }
}

void EventHub::close_all() {
  std::lock_guard lk(mu_);
  for (const auto& s : subs_) s->close();
}

size_t EventHub::subscribers() const {
  std::lock_guard lk(mu_);
  return subs_.size();
}

v1::Event pod_event(std::string kind, const std::string& ns, const std::string& name,
                    const std::string& uid, std::string message) {
  v1::Event e;
  e.set_kind(std::move(kind));
  e.set_namespace_(ns);
  e.set_name(name);
  e.set_uid(uid);
  e.set_message(std::move(message));
  return e;
}

}  // namespace ambient::admin
