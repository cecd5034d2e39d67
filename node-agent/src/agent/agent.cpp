#include "agent/agent.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>

#include "agent/pod_config.h"
#include "agent/standalone_store.h"
#include "fault/crash_point.h"
#include "log/log.h"

namespace ambient::agent {

Agent::Agent(AgentDeps deps)
    : cfg_(deps.config),
      backend_(deps.backend),
      host_(deps.host),
      zds_(deps.zds),
      pods_(deps.pods),
      policy_(deps.policy),
      listener_(deps.listener),
      store_(deps.store),
      observer_(deps.observer),
      metrics_(deps.metrics) {
  // The node's and the agent's own netns: a request naming either is
  // refused, or the node's traffic would be captured (docs/node-agent.md#cni-endpoint).
  const std::string host = cfg_.host_netns_path();
  for (const std::string& path : {host, std::string("/proc/self/ns/net")}) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      forbidden_netns_.push_back({st.st_dev, st.st_ino, path});
    } else {
      log::warn("cannot read {} ({}): CNI requests naming it are not recognised as the node's",
                path, std::strerror(errno));
    }
  }
}

Result<> Agent::check_not_forbidden(const netns::Netns& ns, const std::string& pod) const {
  for (const auto& f : forbidden_netns_) {
    if (f.dev == ns.device() && f.ino == ns.inode()) {
      Error e = make_error(Errc::InvalidArgument,
                           "pod " + pod + ": netns " + ns.path() + " is the network namespace of " +
                               (f.path == "/proc/self/ns/net" ? std::string("the agent itself")
                                                              : "the node (" + f.path + ")") +
                               ", never a pod's: refused, nothing installed");
      e.retryable = false;
      return e;
    }
  }
  return {};
}

std::mutex& Agent::pod_lock(const std::string& uid) {
  return pod_locks_[std::hash<std::string>{}(uid) % pod_locks_.size()];
}

Result<netns::Netns> Agent::open_pod_netns(const std::string& requested,
                                           const std::string& pod) const {
  auto opened = netns::open_requested(cfg_.host_root, requested);
  if (!opened) return std::move(opened).error().context("pod " + pod + ": open netns");
  AMBIENT_RETURN_IF_ERROR(check_not_forbidden(*opened, pod));
  return opened;
}

Result<> Agent::cmd_add(const cni::CniEvent& ev) {
  const std::string pod = ev.pod_namespace + "/" + ev.pod_name;
  if (ev.pod_name.empty() || ev.pod_namespace.empty()) {
    return make_error(Errc::InvalidArgument, "event has no pod name or namespace");
  }
  auto decided = [&] {
    metrics::Timer t(metrics_.decision);
    return policy_.decide(ev);
  }();
  AMBIENT_ASSIGN_OR_RETURN(auto identity, std::move(decided));
  if (!identity) {
    log::info("pod {}: not selected for ambient, no redirection", pod);
    return {};
  }
  auto opened = [&] {
    metrics::Timer t(metrics_.netns_open);
    return open_pod_netns(ev.netns, pod);
  }();
  if (!opened) return std::move(opened).error();
  identity->container_id = ev.container_id;
  for (const auto& ip : ev.ips) identity->ips.push_back(ip.address.address);
  return add_pod(*identity, std::make_shared<const netns::Netns>(std::move(*opened)));
}

Result<> Agent::add_to_probe_set(const std::string& uid, const std::vector<IpAddress>& ips) {
  std::lock_guard lk(host_mu_);
  for (const auto& ip : ips) {
    AMBIENT_RETURN_IF_ERROR(
        host_.add_pod_ip(ip, uid).context("add " + ip.to_string() + " to the probe set"));
  }
  return {};
}

void Agent::remove_from_probe_set(const std::string& uid, const std::vector<IpAddress>& ips) {
  std::lock_guard lk(host_mu_);
  for (const auto& ip : ips) {
    if (auto r = host_.remove_pod_ip(ip, uid); !r) {
      log::warn("remove {} (pod {}) from the probe set: {}", ip.to_string(), uid,
                r.error().describe());
    }
  }
}

// Refuses before the pod is touched: rules without a ztunnel behind them
// would black-hole its traffic.
Result<> Agent::require_ztunnel(const PodIdentity& id) {
  if (zds_.has_connection()) return {};
  auto err =
      make_error(Errc::Unavailable,
                 "pod " + id.name() + ": no ztunnel connection (is ztunnel running on this node?)");
  if (observer_) observer_->enrollment_failed(id, err.describe());
  return err;
}

Result<> Agent::add_pod(const PodIdentity& id, const netns::NetnsRef& ns) {
  const std::string pod = id.name();
  std::lock_guard lk(pod_lock(id.uid));
  if (auto e = pods_.get(id.uid); e && e->workload.netns &&
                                  e->workload.netns->inode() == ns->inode() &&
                                  e->workload.netns->device() == ns->device()) {
    return {};  // already enrolled in this very netns (e.g. CNI and informer both saw it)
  }
  AMBIENT_RETURN_IF_ERROR(require_ztunnel(id));
  const auto rcfg = pod_redirect_config(cfg_, id.annotations, pod);
  double rules_s = 0, zds_s = 0, probes_s = 0;
  // ztunnel sets the pod up (five listeners in its netns) while we install
  // the rules: the ack costs no time of its own unless it is the slower
  // half. The Add goes out once the pod's routing is in place (the
  // backend calls back; see RedirectBackend::install for why not sooner).
  // Either order of rules and ztunnel is safe for a pod being created,
  // whose containers start only after the ADD returns; for a running pod,
  // ztunnel first is the better order (redirected traffic finds its
  // listeners). The pod is enrolled only once both halves and the probe
  // set succeeded; otherwise whatever did succeed is undone.
  zds::Workload w{.uid = id.uid, .info = id.info, .netns = ns};
  std::optional<zds::PendingAdd> pending;
  auto hand_to_ztunnel = [&] { pending.emplace(zds_.begin_add(w)); };
  // Kubernetes mode: annotated while the rules go in (docs/node-agent.md#annotations);
  // started here, since the backend's callback runs inside the pod's netns.
  std::optional<std::future<Result<>>> marking;
  if (listener_) marking.emplace(listener_->mark_enrolled(id));
  auto installed = [&] {
    metrics::Timer t(metrics_.rules, &rules_s);
    return backend_.install(*ns, rcfg, hand_to_ztunnel);
  }();
  if (installed) crash_point_for_test("after-rules");
  if (installed && !pending) hand_to_ztunnel();  // the rules were right already
  // Kubelet's probes must reach the app directly: its IPs go into the
  // host's probe set (comment = pod UID).
  Result<> probed;
  if (installed) {
    metrics::Timer t(metrics_.probe_set, &probes_s);
    probed = add_to_probe_set(id.uid, id.ips);
    if (probed) crash_point_for_test("after-probe-set");
  }
  // What ztunnel adds to the enrollment: the wait for its ack once our own
  // work is done (its whole round trip is ambient_zds_round_trip_*).
  Result<> acked = make_error(Errc::Unavailable, "not handed to ztunnel");
  if (pending) {
    metrics::Timer t(metrics_.zds_add, &zds_s);
    acked = pending->wait();
  }
  // ztunnel's listeners exist now: the backend may adapt to them.
  Result<> ready;
  if (installed && acked) ready = adapt_to_ztunnel(*ns, rcfg);
  Result<> marked = marking ? marking->get() : Result<>{};
  if (!installed || !probed || !acked || !marked || !ready) {
    auto failed = undo_failed_add(id, *ns, rcfg,
                                  {.installed = std::move(installed),
                                   .probed = std::move(probed),
                                   .acked = std::move(acked),
                                   .marked = std::move(marked),
                                   .ready = std::move(ready),
                                   .handed = pending.has_value(),
                                   .marking = marking.has_value()});
    if (observer_ && !failed) observer_->enrollment_failed(id, failed.error().describe());
    return failed;
  }
  auto previous = pods_.get(id.uid);
  pods_.upsert({.workload = w, .redirect = rcfg, .ips = id.ips, .container_id = id.container_id});
  if (store_) store_->put(stored_pod(id, *ns));  // before the answer: a restart finds it
  if (previous) retire_sandbox(*previous, id);
  follow_reconnect(w, pending->connection());
  // The phases in the log line too: a slow enrollment explains itself.
  log::info(
      "pod {}: enrolled (netns {}, backend {}; rules {:.2f} ms, probe set {:.2f} ms, then "
      "ztunnel's ack {:.2f} ms)",
      pod, ns->path(), backend_.name(), rules_s * 1e3, probes_s * 1e3, zds_s * 1e3);
  if (observer_) {
    observer_->enrolled(id, {.rules_s = rules_s, .probe_set_s = probes_s, .zds_ack_s = zds_s});
  }
  return {};
}

// A connection accepted since the Add went out read its snapshot from the
// pod cache, maybe before the pod was in it: ztunnel then drained the pod
// on that connection's SnapshotSent. Any connection newer than the one
// checked here reads the cache after the upsert. The Add goes again to the
// newest one (a no-op for ztunnel when that snapshot had it already),
// queued behind that connection's snapshot and not waited for: the
// plugin's answer must not wait for a whole snapshot. Like a snapshot
// entry, a NACK leaves ztunnel retrying the pod, and a lost connection
// leaves the pod to the next snapshot; a later Del queues behind it.
void Agent::follow_reconnect(const zds::Workload& w, uint64_t acked_on) {
  const uint64_t newest = zds_.newest_connection();
  if (newest == 0 || newest == acked_on) return;
  auto again = zds_.begin_add(w);
  log::info(
      "pod {}/{}: ztunnel reconnected during its enrollment; its Add goes again to zds conn {}",
      w.info.ns, w.info.name, again.connection());
}

// Once per ztunnel connection while its listeners suit the backend (its
// settings are node-wide); for every pod while they do not.
Result<> Agent::adapt_to_ztunnel(const netns::Netns& ns, const redirect::PodRedirectConfig& rcfg) {
  const uint64_t conn = zds_.newest_connection();
  if (conn != 0 && conn == listeners_suit_conn_.load()) return {};
  AMBIENT_ASSIGN_OR_RETURN(const bool suits, backend_.ztunnel_ready(ns, rcfg));
  if (suits) listeners_suit_conn_ = conn;
  return {};
}

// Undoes whichever steps of a failed enrollment succeeded (ztunnel's Add,
// the annotation, the rules and probe entries) and returns the first error.
Result<> Agent::undo_failed_add(const PodIdentity& id, const netns::Netns& ns,
                                const redirect::PodRedirectConfig& rcfg, AddSteps steps) {
  const std::string pod = id.name();
  // A replacing sandbox that failed: the enrolled one is still the pod's,
  // so ztunnel goes back to its netns rather than forgetting the pod.
  const auto enrolled = pods_.get(id.uid);
  const bool keep = enrolled && enrolled->workload.netns;
  if (steps.handed && steps.acked) {
    if (!keep) {
      (void)zds_.del(id.uid);
    } else if (auto back = zds_.add(enrolled->workload); !back) {
      log::error("pod {}: giving ztunnel the enrolled sandbox {} back: {}", pod,
                 enrolled->container_id, back.error().describe());
    }
  }
  if (steps.marking && steps.marked) listener_->unmark_failed(id);
  if (steps.installed) {
    if (auto undo = backend_.remove(ns, rcfg); !undo) {
      log::error("pod {}: rolling back rules after a failed enrollment: {}", pod,
                 undo.error().describe());
    }
    std::vector<IpAddress> added;  // the enrolled sandbox keeps its own entries
    for (const auto& ip : id.ips) {
      if (!keep || std::find(enrolled->ips.begin(), enrolled->ips.end(), ip) == enrolled->ips.end())
        added.push_back(ip);
    }
    remove_from_probe_set(id.uid, added);
  }
  if (!steps.installed) return std::move(steps.installed).error().context("pod " + pod);
  if (!steps.probed) return std::move(steps.probed).error().context("pod " + pod);
  if (!steps.acked) {
    return std::move(steps.acked).error().context("pod " + pod + ": hand netns to ztunnel");
  }
  if (!steps.marked) return std::move(steps.marked).error().context("pod " + pod);
  return std::move(steps.ready).error().context("pod " + pod + ": adapt to ztunnel's listeners");
}

// The pod's sandbox was recreated (same UID, new netns): ztunnel already
// moved to the new netns with the Add; what is left of the old one goes.
void Agent::retire_sandbox(const EnrolledPod& old, const PodIdentity& now) {
  const std::string pod = now.name();
  if (old.workload.netns) {
    if (auto r = backend_.remove(*old.workload.netns, old.redirect); !r) {
      log::warn("pod {}: removing our rules from the replaced sandbox's netns {}: {}", pod,
                old.workload.netns->path(), r.error().describe());
    }
  }
  std::vector<IpAddress> gone;
  for (const auto& ip : old.ips) {
    if (std::find(now.ips.begin(), now.ips.end(), ip) == now.ips.end()) gone.push_back(ip);
  }
  remove_from_probe_set(now.uid, gone);
  log::info("pod {}: sandbox {} replaces {} (netns {}); the old one's rules removed", pod,
            now.container_id.empty() ? "(unnamed)" : now.container_id,
            old.container_id.empty() ? "(unnamed)" : old.container_id,
            old.workload.netns ? old.workload.netns->path() : "unknown");
}

Result<> Agent::adopt_pod(const PodIdentity& id, const netns::NetnsRef& ns, bool reconcile_rules) {
  std::lock_guard lk(pod_lock(id.uid));
  const auto rcfg = pod_redirect_config(cfg_, id.annotations, id.name());
  Result<> r;
  if (ns && reconcile_rules) r = backend_.install(*ns, rcfg).context("pod " + id.name());
  auto probes = add_to_probe_set(id.uid, id.ips);
  if (!probes) log::error("pod {}: {}", id.name(), probes.error().describe());
  pods_.upsert({.workload = {.uid = id.uid, .info = id.info, .netns = ns},
                .redirect = rcfg,
                .ips = id.ips,
                .container_id = id.container_id});
  return r;
}

Result<std::vector<std::string>> Agent::repair_pod(const std::string& uid) {
  std::lock_guard lk(pod_lock(uid));
  auto entry = pods_.get(uid);
  if (!entry || !entry->workload.netns) return std::vector<std::string>{};
  const std::string pod = entry->workload.info.ns + "/" + entry->workload.info.name;
  const netns::Netns& ns = *entry->workload.netns;
  AMBIENT_ASSIGN_OR_RETURN(auto report, backend_.verify(ns, entry->redirect).context("pod " + pod));
  if (report.problems.empty()) return std::vector<std::string>{};
  AMBIENT_RETURN_IF_ERROR(backend_.install(ns, entry->redirect).context("pod " + pod + ": repair"));
  return std::move(report.problems);
}

Result<> Agent::update_pod_ips(const std::string& uid, const std::vector<IpAddress>& ips) {
  std::lock_guard lk(pod_lock(uid));
  auto entry = pods_.get(uid);
  if (!entry) return {};
  auto missing_from = [](const std::vector<IpAddress>& from, const std::vector<IpAddress>& of) {
    std::vector<IpAddress> out;
    for (const auto& ip : of) {
      if (std::find(from.begin(), from.end(), ip) == from.end()) out.push_back(ip);
    }
    return out;
  };
  const auto added = missing_from(entry->ips, ips), gone = missing_from(ips, entry->ips);
  if (added.empty() && gone.empty()) return {};
  const std::string pod = entry->workload.info.ns + "/" + entry->workload.info.name;
  AMBIENT_RETURN_IF_ERROR(add_to_probe_set(uid, added).context("pod " + pod));
  remove_from_probe_set(uid, gone);
  entry->ips = ips;
  pods_.upsert(std::move(*entry));
  log::info("pod {}: IPs changed ({} added, {} gone); the probe set follows", pod, added.size(),
            gone.size());
  return {};
}

Result<> Agent::remove_pod(const std::string& uid, bool netns_going_away) {
  std::lock_guard lk(pod_lock(uid));
  auto entry = pods_.get(uid);
  if (!entry) return {};  // never enrolled, or already removed
  const std::string pod = entry->workload.info.ns + "/" + entry->workload.info.name;
  std::string errors;
  if (!netns_going_away && entry->workload.netns) {
    if (auto r = backend_.remove(*entry->workload.netns, entry->redirect); !r) {
      errors = r.error().describe();
    }
  }
  crash_point_for_test("remove-after-backend");
  const uint64_t told = zds_.newest_connection();
  if (auto r = zds_.del(uid); !r) {
    errors += (errors.empty() ? "" : "; ") + r.error().describe();
  }
  crash_point_for_test("remove-after-zds");
  if (!errors.empty()) {
    // Kept in the cache so a retry can still reach the netns (upstream
    // forgets it first and then cannot clean up on retry).
    return make_error(Errc::Internal, "pod " + pod + ": remove: " + errors);
  }
  remove_from_probe_set(uid, entry->ips);
  crash_point_for_test("remove-after-probe-set");
  (void)pods_.take(uid);
  // A connection accepted meanwhile may have read the pod in its snapshot
  // (ZdsServer::del): it is told too. Later ones no longer see the pod.
  if (zds_.newest_connection() != told) {
    if (auto r = zds_.del(uid, told); !r) {
      log::warn("pod {}: telling a newer ztunnel connection to forget it: {}", pod,
                r.error().describe());
    }
  }
  if (store_) store_->erase(uid);
  log::info("pod {}: removed from the mesh", pod);
  if (observer_) observer_->removed(uid, entry->workload.info.ns, entry->workload.info.name);
  return {};
}

// Whether a DEL names the enrolled sandbox: by container ID when both
// sides know it, else by the netns it names; a DEL that names neither is
// taken to mean the enrolled one.
bool Agent::names_enrolled_sandbox(const EnrolledPod& entry, const cni::CniEvent& ev) const {
  if (!ev.container_id.empty() && !entry.container_id.empty()) {
    return ev.container_id == entry.container_id;
  }
  if (ev.netns.empty() || !entry.workload.netns) return true;
  auto ns = netns::open_requested(cfg_.host_root, ev.netns);
  // A netns that is gone can only be told apart by its path.
  if (!ns) return cfg_.host_root + ev.netns == entry.workload.netns->path();
  return ns->device() == entry.workload.netns->device() &&
         ns->inode() == entry.workload.netns->inode();
}

// What an ADD that died half-way (agent killed) or a replaced sandbox left
// of ours in the netns a DEL names: DEL, which runtimes send after a failed
// ADD and for every sandbox they stop, takes it out.
void Agent::clean_named_netns(const cni::CniEvent& ev, const std::string& pod) {
  if (ev.netns.empty()) return;
  auto ns = netns::open_requested(cfg_.host_root, ev.netns);
  if (!ns) {
    // Gone already (nothing to clean), or not a pod's netns at all: a DEL
    // is answered 200 either way, so the runtime does not retry it.
    if (!ns.error().retryable) {
      log::warn("pod {}: DEL: {}; nothing removed", pod, ns.error().describe());
    }
    return;
  }
  if (!check_not_forbidden(*ns, pod)) {
    log::warn("pod {}: DEL names {}, the node's or the agent's netns: nothing removed", pod,
              ev.netns);
    return;
  }
  if (auto r = backend_.remove(*ns, pod_redirect_config(cfg_, {})); !r) {
    log::warn("pod {}: cleaning up after DEL: {}", pod, r.error().describe());
  }
}

Result<> Agent::cmd_del(const cni::CniEvent& ev) {
  const std::string key = pod_key(ev);
  const std::string pod = ev.pod_namespace + "/" + ev.pod_name;
  auto entry = pods_.get(key);
  if (!entry) {
    clean_named_netns(ev, pod);
    return {};
  }
  if (names_enrolled_sandbox(*entry, ev)) {
    log::info("pod {}: DEL for the enrolled sandbox {}", pod,
              entry->container_id.empty() ? ev.netns : entry->container_id);
    AMBIENT_RETURN_IF_ERROR(remove_pod(key, false));
    if (listener_) listener_->sandbox_removed(entry->workload.info.ns, entry->workload.info.name);
    return {};
  }
  log::info(
      "pod {}: DEL for an earlier sandbox ({}, netns {}); the enrolled sandbox {} keeps its "
      "redirection",
      pod, ev.container_id.empty() ? "unnamed" : ev.container_id,
      ev.netns.empty() ? "none" : ev.netns, entry->container_id);
  clean_named_netns(ev, pod);
  return {};
}

}  // namespace ambient::agent
