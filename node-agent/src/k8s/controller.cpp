#include "k8s/controller.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "k8s/node_affinity.h"
#include "log/log.h"

namespace ambient::k8s {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string meta(const json::Json& obj, const char* key) {
  const auto* md = json::find(obj, "metadata");
  if (!md) return "";
  const auto* v = json::find(*md, key);
  return v && v->is_string() ? v->get<std::string>() : "";
}

std::string annotation(const json::Json& pod) {
  auto a = annotations_of(pod);
  auto it = a.find(std::string(kRedirectionAnnotation));
  return it == a.end() ? "" : it->second;
}

std::vector<IpAddress> pod_ips(const json::Json& pod) {
  std::vector<IpAddress> out;
  const auto* status = json::find(pod, "status");
  if (!status) return out;
  if (const auto* ips = json::find(*status, "podIPs"); ips && ips->is_array()) {
    for (const auto& e : *ips) {
      if (const auto* ip = json::find(e, "ip"); ip && ip->is_string()) {
        if (auto a = IpAddress::parse(ip->get<std::string>())) out.push_back(a->unmapped());
      }
    }
  }
  if (out.empty()) {
    if (const auto* ip = json::find(*status, "podIP"); ip && ip->is_string()) {
      if (auto a = IpAddress::parse(ip->get<std::string>())) out.push_back(a->unmapped());
    }
  }
  return out;
}

// Upstream's exact merge-patch bodies, by Controller::Annotation.
constexpr const char* kAnnotationBodies[] = {
    R"({"metadata":{"annotations":{"ambient.istio.io/redirection":"enabled"}}})",
    R"({"metadata":{"annotations":{"ambient.istio.io/redirection":"pending"}}})",
    R"({"metadata":{"annotations":{"ambient.istio.io/redirection":null}}})"};

std::string redirection_of(const agent::PodIdentity& pod) {
  auto it = pod.annotations.find(std::string(kRedirectionAnnotation));
  return it == pod.annotations.end() ? "" : it->second;
}

agent::PodIdentity identity_of(const json::Json& pod) {
  std::string sa;
  if (const auto* spec = json::find(pod, "spec")) {
    if (const auto* v = json::find(*spec, "serviceAccountName"); v && v->is_string()) {
      sa = v->get<std::string>();
    }
  }
  return {.uid = meta(pod, "uid"),
          .info = {.name = meta(pod, "name"),
                   .ns = meta(pod, "namespace"),
                   .service_account = sa.empty() ? "default" : sa},
          .ips = pod_ips(pod),
          .annotations = annotations_of(pod)};
}

}  // namespace

Controller::Controller(const agent::Config& cfg, const KubeClient& client,
                       std::vector<EnablementSelector> selectors, netns::ProcScanDeps proc,
                       metrics::ReconcileMetrics metrics)
    : cfg_(cfg),
      client_(client),
      selectors_(std::move(selectors)),
      proc_(std::move(proc)),
      metrics_(metrics) {
  pods_ = std::make_unique<Informer>(
      client_,
      Informer::Options{.path = "/api/v1/pods",
                        .field_selector = "spec.nodeName=" + cfg_.node_name,
                        .name = "pods"},
      [this](EventType t, const ObjectRef& o, const ObjectRef& c) { on_pod(t, o, c); });
  namespaces_ = std::make_unique<Informer>(
      client_, Informer::Options{.path = "/api/v1/namespaces", .name = "namespaces"},
      [this](EventType t, const ObjectRef& o, const ObjectRef& c) { on_namespace(t, o, c); });
}

Controller::~Controller() { stop(); }

bool Controller::start(agent::Agent& agent) {
  agent_ = &agent;
  Clock::time_point caches_started;
  {
    // Threads are only created under the lock and before stop() ran, so
    // stop() always sees (and joins) every thread that exists.
    std::lock_guard lk(mu_);
    if (stopping_) return false;
    caches_started = Clock::now();
    patcher_ = std::thread([this] { annotation_writer(); });
    namespaces_->start();
    pods_->start();
  }
  // Never go on with a partial view: an empty cache here would mean an
  // empty snapshot for ztunnel, which drains every workload on the node.
  while (!(namespaces_->wait_synced(1s) && pods_->wait_synced(1s))) {
    std::lock_guard lk(mu_);
    if (stopping_) return false;
    log::info("waiting for the pod and namespace caches to sync");
  }
  rebuild_from_cluster(Clock::now() - caches_started);
  {
    std::lock_guard lk(mu_);
    if (stopping_) return false;
    worker_ = std::thread([this] { worker(); });
  }
  return true;
}

void Controller::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  patch_cv_.notify_all();
  if (pods_) pods_->stop();
  if (namespaces_) namespaces_->stop();
  if (worker_.joinable()) worker_.join();
  if (patcher_.joinable()) patcher_.join();
}

bool Controller::should_enroll(const json::Json& pod, const json::Json* ns) const {
  const std::string pod_ns = meta(pod, "namespace");
  const auto& excl = cfg_.exclude_namespaces;
  if (std::find(excl.begin(), excl.end(), pod_ns) != excl.end()) return false;
  auto labels = labels_of(pod);
  if (pod_ns == cfg_.system_namespace && labels["app"] == "ztunnel") return false;
  if (!ns) return false;
  return pod_matches(pod, *ns, selectors_);
}

Result<std::optional<agent::PodIdentity>> Controller::decide(const cni::CniEvent& ev) const {
  const std::string key = ev.pod_namespace + "/" + ev.pod_name;
  const auto deadline = Clock::now() + 5s;
  ObjectRef pod, ns;
  // Re-read the cache until the pod shows up (upstream looks once).
  for (;;) {
    pod = pods_->get(key);
    ns = namespaces_->get(ev.pod_namespace);
    bool same_pod = pod && (ev.pod_uid.empty() || meta(*pod, "uid") == ev.pod_uid);
    if (same_pod && ns) break;
    if (Clock::now() > deadline) {
      return make_error(Errc::NotFound,
                        "failed to get pod " + key + ": " +
                            (!ns ? "namespace not in the agent's cache"
                                 : "pod not in the agent's cache for node " + cfg_.node_name));
    }
    std::this_thread::sleep_for(20ms);
  }
  if (!should_enroll(*pod, ns.get())) return std::optional<agent::PodIdentity>();
  return std::optional<agent::PodIdentity>(identity_of(*pod));
}

std::future<Result<>> Controller::mark_enrolled(const agent::PodIdentity& pod) {
  try {
    return std::async(std::launch::async,
                      [this, ns = pod.info.ns, name = pod.info.name, before = redirection_of(pod)] {
                        return write_enabled(ns, name, before);
                      });
  } catch (const std::system_error& e) {
    std::promise<Result<>> failed;
    failed.set_value(make_error(Errc::Unavailable,
                                std::string("cannot start the annotation write: ") + e.what()));
    return failed.get_future();
  }
}

void Controller::unmark_failed(const agent::PodIdentity& pod) {
  const std::string before = redirection_of(pod);
  if (before == "enabled") return;  // the write changed nothing
  annotate(pod.info.ns, pod.info.name,
           before == "pending" ? Annotation::Pending : Annotation::Remove);
}

void Controller::sandbox_removed(const std::string& ns, const std::string& name) {
  ObjectRef pod = pods_->get(ns + "/" + name);
  if (!pod || annotation(*pod) != "enabled") return;
  const auto* metadata = json::find(*pod, "metadata");
  if (metadata && json::find(*metadata, "deletionTimestamp")) return;
  log::info("pod {}/{}: its enrolled sandbox is gone; removing the redirection annotation", ns,
            name);
  annotate(ns, name, Annotation::Remove);
}

// docs/node-agent.md#annotations: the enrollment's own write, bounded by
// kMarkBudget, ordered after any background patch of the same pod.
Result<> Controller::write_enabled(const std::string& ns, const std::string& name,
                                   const std::string& before) {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  const auto deadline = Clock::now() + kMarkBudget;
  const std::string key = ns + "/" + name;
  const std::string body = kAnnotationBodies[static_cast<int>(Annotation::Enabled)];
  {
    std::unique_lock lk(mu_);
    ++marking_[key];
    // A background patch of this pod already on the wire would land after
    // ours and undo it.
    patch_cv_.wait_until(lk, deadline, [&] {
      return !(in_flight_ && in_flight_->ns == ns && in_flight_->name == name);
    });
  }
  const std::string url = "/api/v1/namespaces/" + ns + "/pods/" + name + "/status";
  std::string why = "no time left";
  bool maybe_applied = false;  // a lost answer or a server error may hide a write
  for (int attempt = 0;; ++attempt) {
    const auto left = duration_cast<milliseconds>(deadline - Clock::now());
    if (left <= 0ms) break;
    auto r = client_.request("PATCH", url, body, "application/merge-patch+json", left);
    if (r && r->status == 200) {
      why.clear();
      break;
    }
    why = r ? api_error_message(*r) : r.error().describe();
    const bool transient = !r || r->status == 429 || r->status >= 500;
    maybe_applied = maybe_applied || !r || r->status >= 500;
    if (!transient) break;  // 404 (pod gone), 403, 422...: retrying will not help
    const auto pause = std::min<milliseconds>(100ms * (1 << std::min(attempt, 3)),
                                              duration_cast<milliseconds>(deadline - Clock::now()));
    if (pause > 0ms) std::this_thread::sleep_for(pause);
  }
  const bool ok = why.empty();
  {
    std::lock_guard lk(mu_);
    if (--marking_[key] == 0) marking_.erase(key);
    if (ok) {
      last_patched_[key] = body;
      // Queued before this enrollment, so older than what it wrote.
      std::erase_if(patches_, [&](const PatchJob& p) { return p.ns == ns && p.name == name; });
    }
  }
  patch_cv_.notify_all();  // the writer may go on with this pod
  if (ok) return {};
  if (maybe_applied && before != "enabled") {
    annotate(ns, name, before == "pending" ? Annotation::Pending : Annotation::Remove);
  }
  return make_error(Errc::Unavailable, "set " + std::string(kRedirectionAnnotation) +
                                           "=enabled (gave up after " +
                                           std::to_string(kMarkBudget.count()) + " ms): " + why);
}

void Controller::on_pod(EventType t, const ObjectRef&, const ObjectRef& cur) {
  WorkItem item{.key = Informer::key_of(*cur), .event = t};
  if (t == EventType::Deleted) item.deleted = cur;
  enqueue(std::move(item));
}

// Namespace events are handled here, on the informer's thread, rather than
// queued: this is where one counts as processed.
void Controller::on_namespace(EventType t, const ObjectRef& old, const ObjectRef& cur) {
  count_event(t);
  if (t == EventType::Deleted) return;
  if (old && labels_of(*old) == labels_of(*cur)) return;
  // A label change can flip every pod of the namespace: look at each.
  const std::string name = meta(*cur, "name");
  for (const auto& p : pods_->list()) {
    if (meta(*p, "namespace") == name) {
      enqueue({.key = Informer::key_of(*p), .event = EventType::Modified});
    }
  }
}

// docs/node-agent.md#metrics-counting: once per event processed, failed or not.
void Controller::count_event(EventType t) const {
  metrics::inc(t == EventType::Added      ? metrics_.add
               : t == EventType::Modified ? metrics_.update
                                          : metrics_.del);
}

void Controller::enqueue(WorkItem item, std::chrono::milliseconds delay) {
  {
    std::lock_guard lk(mu_);
    // reconcile() reads the pod's newest copy from the informer, so one
    // queued look at a pod answers every event before it is taken. Without
    // merging, a namespace whose label flips N times queues each of its
    // pods N times. Deletes carry their object and are never merged.
    if (delay == std::chrono::milliseconds::zero() && !item.deleted) {
      if (!waiting_.insert(item.key).second) {
        count_event(item.event);  // handled by the queued one
        return;
      }
      item.waiting = true;
    }
    queue_.emplace(Clock::now() + delay, std::move(item));
  }
  cv_.notify_all();
}

void Controller::worker() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    if (queue_.empty()) {
      cv_.wait(lk);
      continue;
    }
    auto due = queue_.begin()->first;
    if (due > Clock::now()) {
      cv_.wait_until(lk, due);
      continue;
    }
    WorkItem item = std::move(queue_.begin()->second);
    queue_.erase(queue_.begin());
    if (item.waiting) {
      waiting_.erase(item.key);
      item.waiting = false;  // a retry is queued apart from new events
    }
    lk.unlock();
    auto r = reconcile(item);
    count_event(item.event);  // a retry is processed, and counted, again
    lk.lock();
    if (r) {
      attempts_.erase(item.key);
      continue;
    }
    int n = ++attempts_[item.key];
    auto delay = std::min<std::chrono::milliseconds>(200ms * (1 << std::min(n, 8)), 30s);
    log::warn("pod {}: {} (retry {} in {} ms)", item.key, r.error().describe(), n, delay.count());
    queue_.emplace(Clock::now() + delay, std::move(item));
  }
}

Result<> Controller::reconcile(const WorkItem& item) {
  if (item.deleted) {
    const auto& pod = *item.deleted;
    const std::string uid = meta(pod, "uid");
    status_ips_.erase(uid);
    {
      std::lock_guard lk(mu_);
      last_patched_.erase(meta(pod, "namespace") + "/" + meta(pod, "name"));
    }
    std::string a = annotation(pod);
    if (agent_->is_enrolled(uid) || a == "enabled" || a == "pending") {
      return agent_->remove_pod(uid, /*netns_going_away=*/true);
    }
    return {};
  }
  ObjectRef pod = pods_->get(item.key);
  if (!pod) return {};  // deleted meanwhile: its Delete event does the rest
  const std::string uid = meta(*pod, "uid");
  const std::string a = annotation(*pod);
  const bool marked = a == "enabled" || a == "pending";
  const bool enrolled = agent_->is_enrolled(uid);
  if (!enrolled) status_ips_.erase(uid);
  ObjectRef ns = namespaces_->get(meta(*pod, "namespace"));

  if (pod_is_terminal(*pod)) {
    if (enrolled || marked) {
      AMBIENT_RETURN_IF_ERROR(agent_->remove_pod(uid, /*netns_going_away=*/true));
      annotate(*pod, Annotation::Remove);
    }
    return {};
  }
  if (!should_enroll(*pod, ns.get())) {
    if (enrolled || marked) {
      AMBIENT_RETURN_IF_ERROR(agent_->remove_pod(uid, /*netns_going_away=*/false));
      if (marked) annotate(*pod, Annotation::Remove);
      if (enrolled) log::info("pod {}: unenrolled", item.key);
    }
    return {};
  }
  if (enrolled) {
    if (a != "enabled") annotate(*pod, Annotation::Enabled);
    return follow_pod_ips(uid, *pod);
  }
  if (pod_ips(*pod).empty()) return {};  // a later status update brings the IPs
  auto r = enroll_running(*pod);
  if (!r && a != "pending") annotate(*pod, Annotation::Pending);
  return r;
}

// The probe set holds what the CNI event said, or the status at startup;
// either may have had no IPs, and IPs may change. What counts is a change
// of the status itself: right after the runtime replaced a sandbox the
// status still shows the old sandbox's IPs, which must not come back.
Result<> Controller::follow_pod_ips(const std::string& uid, const json::Json& pod) {
  auto ips = pod_ips(pod);
  if (ips.empty()) return {};  // entries stay until the pod is removed
  auto seen = status_ips_.find(uid);
  if (seen != status_ips_.end() &&
      std::is_permutation(ips.begin(), ips.end(), seen->second.begin(), seen->second.end())) {
    return {};
  }
  AMBIENT_RETURN_IF_ERROR(agent_->update_pod_ips(uid, ips));
  status_ips_[uid] = std::move(ips);
  return {};
}

Result<> Controller::enroll_running(const json::Json& pod) {
  auto id = identity_of(pod);
  std::vector<netns::WantedPod> wanted = {{.uid = id.uid, .ips = pod_ips(pod)}};
  AMBIENT_ASSIGN_OR_RETURN(auto found, netns::scan_proc(proc_, wanted));
  auto it = found.find(id.uid);
  if (it == found.end()) {
    return make_error(Errc::NotFound, "pod " + id.name() +
                                          ": can't find its netns in /proc (not started yet, or "
                                          "not on this node)");
  }
  return agent_->add_pod(id, it->second.netns);
}

namespace {
constexpr size_t kRebuildParallelism = 4;
}  // namespace

void Controller::rebuild_from_cluster(Clock::duration listed_in) {
  std::vector<ObjectRef> enrolled;
  for (const auto& p : pods_->list()) {
    if (annotation(*p) != "enabled" || pod_is_terminal(*p)) continue;
    if (meta(*p, "namespace") == cfg_.system_namespace && labels_of(*p)["app"] == "ztunnel") {
      continue;
    }
    enrolled.push_back(p);
  }
  std::vector<netns::WantedPod> wanted;
  wanted.reserve(enrolled.size());
  for (const auto& p : enrolled) wanted.push_back({.uid = meta(*p, "uid"), .ips = pod_ips(*p)});
  using ms = std::chrono::duration<double, std::milli>;
  const auto scan_start = Clock::now();
  std::map<std::string, netns::FoundNetns> found;
  if (!wanted.empty()) {
    auto scanned = netns::scan_proc(proc_, wanted);
    if (scanned) {
      found = std::move(*scanned);
    } else {
      // Still adopt every pod (as Keep): an empty snapshot would drain them.
      log::error("startup /proc scan failed: {}", scanned.error().describe());
    }
  }
  const auto adopt_start = Clock::now();
  // A few pods at a time: verifying rules is mostly waiting on netlink and
  // on iptables processes, and ztunnel gets no snapshot until all are done.
  std::atomic<size_t> next{0}, kept{0};
  auto adopt = [&] {
    for (size_t i; (i = next++) < enrolled.size();) {
      auto id = identity_of(*enrolled[i]);
      auto it = found.find(id.uid);
      netns::NetnsRef ns = it == found.end() ? nullptr : it->second.netns;
      if (!ns) ++kept;
      if (auto r = agent_->adopt_pod(id, ns, cfg_.reconcile_on_startup); !r) {
        log::error(
            "failed to reconcile inpod rules for pod, try restarting the pod, or removing and "
            "re-adding it to the mesh: {}",
            r.error().describe());
      }
    }
  };
  std::vector<std::thread> workers;
  for (size_t w = 1; w < std::min<size_t>(kRebuildParallelism, enrolled.size()); ++w) {
    workers.emplace_back(adopt);
  }
  adopt();
  for (auto& t : workers) t.join();
  log::info(
      "startup: {} enrolled pods rebuilt ({} without a netns, sent as Keep; caches listed in "
      "{:.1f} ms, /proc scan {:.1f} ms, rules verified in {:.1f} ms)",
      enrolled.size(), kept.load(), ms(listed_in).count(), ms(adopt_start - scan_start).count(),
      ms(Clock::now() - adopt_start).count());
}

void Controller::annotate(const json::Json& pod, Annotation a) {
  annotate(meta(pod, "namespace"), meta(pod, "name"), a);
}

void Controller::annotate(const std::string& ns, const std::string& name, Annotation a) {
  {
    std::lock_guard lk(mu_);
    const std::string body = kAnnotationBodies[static_cast<int>(a)];
    // Only the newest value for a pod matters: a queued patch with another
    // one is dropped.
    bool queued = false;
    std::erase_if(patches_, [&](const PatchJob& p) {
      if (p.ns != ns || p.name != name) return false;
      if (p.body == body) queued = true;
      return p.body != body;
    });
    if (queued) return;
    // The informer may still show the pod as it was before our own patch
    // (CNI enrolled it, then a status update arrived): same value, no
    // second patch.
    if (in_flight_ && in_flight_->ns == ns && in_flight_->name == name) {
      if (in_flight_->body == body) return;
    } else if (auto last = last_patched_.find(ns + "/" + name);
               last != last_patched_.end() && last->second == body) {
      return;
    }
    patches_.push_back({.ns = ns, .name = name, .body = body, .due = Clock::now()});
  }
  patch_cv_.notify_all();
}

void Controller::annotation_writer() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    const auto now = Clock::now();
    auto next = now + 1s;
    auto it = patches_.begin();
    for (; it != patches_.end(); ++it) {
      // An enrollment is writing this pod's annotation: it goes first.
      if (marking_.contains(it->ns + "/" + it->name)) continue;
      if (it->due <= now) break;
      next = std::min(next, it->due);
    }
    if (it == patches_.end()) {
      patch_cv_.wait_until(lk, next);
      continue;
    }
    PatchJob job = std::move(*it);
    patches_.erase(it);
    in_flight_ = job;
    lk.unlock();
    auto r =
        client_.request("PATCH", "/api/v1/namespaces/" + job.ns + "/pods/" + job.name + "/status",
                        job.body, "application/merge-patch+json", 10s);
    lk.lock();
    in_flight_.reset();
    patch_cv_.notify_all();  // an enrollment may be waiting for this pod's patch to land
    if (r && r->status == 200) {
      last_patched_[job.ns + "/" + job.name] = job.body;
      continue;
    }
    if (r && r->status == 404) {  // gone pods need nothing
      last_patched_.erase(job.ns + "/" + job.name);
      continue;
    }
    std::string why = r ? api_error_message(*r) : r.error().describe();
    bool newer = std::any_of(patches_.begin(), patches_.end(), [&](const PatchJob& p) {
      return p.ns == job.ns && p.name == job.name;
    });
    if (newer || ++job.attempt >= 8) {
      if (!newer) log::error("pod {}/{}: giving up on annotation patch: {}", job.ns, job.name, why);
      continue;
    }
    log::warn("pod {}/{}: annotation patch failed (retrying): {}", job.ns, job.name, why);
    job.due = Clock::now() + std::min<std::chrono::milliseconds>(100ms * (1 << job.attempt), 10s);
    patches_.push_back(std::move(job));
  }
}

bool Controller::is_upgrade() const {
  if (cfg_.disable_safe_upgrade) {
    log::info("Ambient node agent safe upgrade explicitly disabled via env");
    return false;
  }
  const bool fallback = cfg_.istio_owned_cni_config;
  const int attempts = cfg_.istio_owned_cni_config ? 3 : 1;
  for (int i = 0; i < attempts; ++i) {
    if (i) std::this_thread::sleep_for(1s);
    auto r = client_.request(
        "GET", "/apis/apps/v1/namespaces/" + cfg_.pod_namespace + "/daemonsets/istio-cni-node");
    if (!r) continue;
    if (r->status == 404 || r->status == 401 || r->status == 403) return false;
    if (r->status != 200) continue;
    auto ds = json::Json::parse(r->body, nullptr, false);
    if (ds.is_discarded()) continue;
    if (ds.contains("metadata") && ds["metadata"].contains("deletionTimestamp")) return false;
    auto node = client_.request("GET", "/api/v1/nodes/" + cfg_.node_name);
    if (!node || node->status != 200) continue;
    auto node_obj = json::Json::parse(node->body, nullptr, false);
    if (node_obj.is_discarded()) continue;
    // No replacement agent will start on a node the DaemonSet no longer
    // targets: that is an uninstall.
    if (!daemonset_targets_node(ds, node_obj)) {
      log::info(
          "DaemonSet istio-cni-node no longer targets node {} (node selector or required node "
          "affinity): this is an uninstall",
          cfg_.node_name);
      return false;
    }
    log::info(
        "DaemonSet istio-cni-node still exists: this is an upgrade or a node reboot, "
        "leaving plugin in place");
    return true;
  }
  return fallback;
}

}  // namespace ambient::k8s
