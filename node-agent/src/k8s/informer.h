// List+watch cache of one resource, like client-go's informer: a full list,
// then a watch resumed from the last resourceVersion (bookmarks included);
// a 410 Gone means relist, and the relist is turned into the add/update/
// delete events that were missed, so handlers never lose one. Errors back
// off with jitter. One thread per informer; handlers run on it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "k8s/kube_client.h"
#include "lib/json_fields.h"

namespace ambient::k8s {

enum class EventType { Added, Modified, Deleted };

using ObjectRef = std::shared_ptr<const json::Json>;

class Informer {
 public:
  struct Options {
    std::string path;            // e.g. /api/v1/pods
    std::string field_selector;  // e.g. spec.nodeName=node-1
    std::string name;            // for logs
  };
  // old is null for Added; cur is the deleted object for Deleted.
  using Handler = std::function<void(EventType, const ObjectRef& old, const ObjectRef& cur)>;

  Informer(const KubeClient& client, Options opts, Handler handler);
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  void start();
  void stop();
  // True once the first list has been applied.
  bool wait_synced(std::chrono::milliseconds timeout);
  bool synced() const { return synced_; }

  // key = "namespace/name" for namespaced objects, "name" otherwise.
  ObjectRef get(const std::string& key) const;
  std::vector<ObjectRef> list() const;
  std::string resource_version() const;
  uint64_t relists() const { return relists_; }

  static std::string key_of(const json::Json& obj);

 private:
  void run();
  Result<> list_and_replace();
  // Returns when the watch ends; "gone" means the version expired.
  Result<bool> watch();
  void apply(EventType t, const ObjectRef& obj);
  bool sleep_for(std::chrono::milliseconds d);

  const KubeClient& client_;
  Options opts_;
  Handler handler_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  mutable std::shared_mutex mu_;
  std::map<std::string, ObjectRef> store_;
  std::string rv_;
  std::atomic<bool> synced_{false};
  std::atomic<uint64_t> relists_{0};
  uint64_t watch_lines_ = 0;  // lines the watches delivered (informer thread only)
  std::mutex synced_mu_;
  std::condition_variable synced_cv_;
};

}  // namespace ambient::k8s
