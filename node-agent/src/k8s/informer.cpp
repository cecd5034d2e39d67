#include "k8s/informer.h"

#include <random>

#include "k8s/watch_event.h"
#include "log/log.h"

namespace ambient::k8s {

using namespace std::chrono_literals;

namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

Informer::Informer(const KubeClient& client, Options opts, Handler handler)
    : client_(client), opts_(std::move(opts)), handler_(std::move(handler)) {}

Informer::~Informer() { stop(); }

void Informer::start() {
  thread_ = std::thread([this] { run(); });
}

void Informer::stop() {
  {
    // Under the sleeper's mutex: set between its check of the flag and its
    // wait, the notification would be lost and shutdown would wait out
    // the whole back-off.
    std::lock_guard lk(wake_mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Informer::wait_synced(std::chrono::milliseconds timeout) {
  std::unique_lock lk(synced_mu_);
  return synced_cv_.wait_for(lk, timeout, [&] { return synced_.load(); });
}

std::string Informer::key_of(const json::Json& obj) {
  std::string ns = meta_string(obj, "namespace");
  std::string name = meta_string(obj, "name");
  return ns.empty() ? name : ns + "/" + name;
}

ObjectRef Informer::get(const std::string& key) const {
  std::shared_lock lk(mu_);
  auto it = store_.find(key);
  return it == store_.end() ? nullptr : it->second;
}

std::vector<ObjectRef> Informer::list() const {
  std::shared_lock lk(mu_);
  std::vector<ObjectRef> out;
  out.reserve(store_.size());
  for (const auto& [k, v] : store_) out.push_back(v);
  return out;
}

std::string Informer::resource_version() const {
  std::shared_lock lk(mu_);
  return rv_;
}

bool Informer::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock lk(wake_mu_);
  return !wake_.wait_for(lk, d, [&] { return stop_.load(); });
}

void Informer::apply(EventType t, const ObjectRef& obj) {
  std::string key = key_of(*obj);
  ObjectRef old;
  {
    std::unique_lock lk(mu_);
    auto it = store_.find(key);
    if (it != store_.end()) old = it->second;
    if (t == EventType::Deleted) {
      store_.erase(key);
    } else {
      store_[key] = obj;
      if (old && t == EventType::Added) t = EventType::Modified;  // replayed add
    }
  }
  if (t == EventType::Deleted && !old) return;  // never had it: nothing to tell
  handler_(t, old, obj);
}

Result<> Informer::list_and_replace() {
  std::string path = opts_.path;
  if (!opts_.field_selector.empty()) path += "?fieldSelector=" + escape(opts_.field_selector);
  const auto started = std::chrono::steady_clock::now();
  AMBIENT_ASSIGN_OR_RETURN(HttpResult r, client_.request("GET", path));
  const auto fetched = std::chrono::steady_clock::now();
  if (r.status != 200) {
    return make_error(Errc::Unavailable, "list " + opts_.name + ": " + api_error_message(r));
  }
  auto body = parse_list_body(r.body);
  if (!body) return std::move(body).error().context("list " + opts_.name);
  std::map<std::string, ObjectRef> fresh;
  for (auto& item : body->items) {
    auto obj = std::make_shared<const json::Json>(std::move(item));
    fresh[key_of(*obj)] = obj;
  }
  const std::string rv = body->resource_version;
  // Turn the difference with what we had into events (a relist after 410
  // must not lose the deletes and updates that happened meanwhile).
  std::vector<ObjectRef> gone;
  {
    std::shared_lock lk(mu_);
    for (const auto& [k, v] : store_) {
      if (!fresh.count(k)) gone.push_back(v);
    }
  }
  for (auto& obj : gone) apply(EventType::Deleted, obj);
  for (auto& [k, obj] : fresh) {
    ObjectRef old = get(k);
    if (old && meta_string(*old, "resourceVersion") == meta_string(*obj, "resourceVersion"))
      continue;
    apply(EventType::Added, obj);
  }
  {
    std::unique_lock lk(mu_);
    rv_ = rv;
  }
  using ms = std::chrono::duration<double, std::milli>;
  log::info("informer {}: listed {} objects (request {:.1f} ms, processing {:.1f} ms)", opts_.name,
            fresh.size(), ms(fetched - started).count(),
            ms(std::chrono::steady_clock::now() - fetched).count());
  return {};
}

Result<bool> Informer::watch() {
  std::string path = opts_.path + "?watch=true&allowWatchBookmarks=true&timeoutSeconds=300" +
                     "&resourceVersion=" + escape(resource_version());
  if (!opts_.field_selector.empty()) path += "&fieldSelector=" + escape(opts_.field_selector);
  bool gone = false;
  std::string failure;
  auto status = client_.stream_lines(
      path,
      [&](std::string_view line) {
        WatchLine w = parse_watch_line(line);
        if (w.kind == WatchLine::Kind::Failure) {
          gone = w.gone;
          failure = w.failure;
          return false;
        }
        ++watch_lines_;
        if (w.kind == WatchLine::Kind::Ignored) return true;
        if (w.type == "ADDED")
          apply(EventType::Added, w.object);
        else if (w.type == "MODIFIED")
          apply(EventType::Modified, w.object);
        else if (w.type == "DELETED")
          apply(EventType::Deleted, w.object);
        if (!w.resource_version.empty()) {  // BOOKMARK only moves the version
          std::unique_lock lk(mu_);
          rv_ = w.resource_version;
        }
        return true;
      },
      stop_);
  if (!status) return std::move(status).error();
  if (*status == 410) gone = true;
  if (gone) return true;
  if (!failure.empty())
    return make_error(Errc::Unavailable, "watch " + opts_.name + ": " + failure);
  if (*status != 200 && !stop_) {
    return make_error(Errc::Unavailable,
                      "watch " + opts_.name + ": HTTP " + std::to_string(*status));
  }
  return false;
}

void Informer::run() {
  std::mt19937 rng(std::random_device{}());
  auto backoff = 200ms;
  bool need_list = true;
  // 410s since a watch last delivered anything: the first relists at once
  // (the version expired while we were away), later ones back off, or a
  // server that keeps answering 410 gets a list and a watch per round trip.
  int gone_in_a_row = 0;
  while (!stop_) {
    if (need_list) {
      auto r = list_and_replace();
      if (!r) {
        log::warn("informer {}: {}", opts_.name, r.error().describe());
      } else {
        need_list = false;
        if (gone_in_a_row == 0) backoff = 200ms;
        if (!synced_) {
          std::lock_guard lk(synced_mu_);
          synced_ = true;
          synced_cv_.notify_all();
        }
        continue;
      }
    } else {
      const uint64_t lines_before = watch_lines_;
      auto r = watch();
      if (stop_) break;
      const bool progressed = watch_lines_ != lines_before;
      if (progressed) {
        gone_in_a_row = 0;
        backoff = 200ms;
      }
      if (r && *r) {
        ++relists_;
        need_list = true;
        if (++gone_in_a_row == 1) {
          log::info("informer {}: resourceVersion expired (410), relisting", opts_.name);
          continue;
        }
        log::warn(
            "informer {}: resourceVersion expired (410) again right after a relist ({} in a row), "
            "relisting after {} ms",
            opts_.name, gone_in_a_row, backoff.count());
      } else if (r) {
        // The server ended the watch: resume from rv, at once unless it
        // ended without a line (a server closing every watch at once).
        if (progressed) continue;
      } else {
        log::warn("informer {}: {}", opts_.name, r.error().describe());
      }
    }
    // Jitter keeps a node fleet from hammering a recovering API server in step.
    auto jitter = std::uniform_int_distribution<int>(0, static_cast<int>(backoff.count() / 2))(rng);
    if (!sleep_for(backoff + std::chrono::milliseconds(jitter))) break;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 10s);
  }
}

}  // namespace ambient::k8s
