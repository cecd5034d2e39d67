// Standalone mode's enrolled pods across agent restarts
// (docs/node-agent.md#standalone-mode). Without Kubernetes nothing else
// tells a new agent which pods were enrolled, and ztunnel drains every pod
// missing from its next snapshot while their rules still redirect to it.
// So every enrollment and removal rewrites one JSON file in the run dir
// (temp file, fsync, rename), and a starting agent re-adopts the pods it
// lists before ztunnel may connect.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agent/policy.h"
#include "lib/result.h"
#include "metrics/metrics.h"
#include "netns/netns.h"

namespace ambient::agent {

class Agent;

inline constexpr std::string_view kStandaloneStoreFile = "standalone-pods.json";
inline constexpr int kStandaloneStoreVersion = 1;
inline constexpr std::string_view kBootIdPath = "/proc/sys/kernel/random/boot_id";

// One enrolled pod as the file keeps it: its identity, per-pod settings and
// sandbox, and its netns by path and by identity (a path can be reused by
// another netns once the pod is gone).
struct StoredPod {
  PodIdentity pod;
  std::string netns_path;
  uint64_t netns_dev = 0;
  uint64_t netns_ino = 0;
};

StoredPod stored_pod(const PodIdentity& pod, const netns::Netns& ns);

struct StoreContents {
  std::string boot_id;  // the kernel's boot the file was written in
  std::vector<StoredPod> pods;
};

// The file's text, and back. Decoding fails on anything but a complete
// document of kStandaloneStoreVersion.
std::string encode_store(const StoreContents& contents);
Result<StoreContents> decode_store(std::string_view text);

// Thread-safe. Changes to different pods are merged into one write: a
// caller waits for at most the write in progress and the one carrying its
// own change, never for a queue of them.
class StandaloneStore {
 public:
  // `boot_id_path`: where this boot's ID is read (a file from an earlier
  // boot names netns that no longer exist). `write_failures`:
  // ambient_standalone_store_write_failures_total (docs/node-agent.md#metrics).
  explicit StandaloneStore(std::string path,
                           const std::string& boot_id_path = std::string(kBootIdPath),
                           prometheus::Counter* write_failures = nullptr);
  StandaloneStore(const StandaloneStore&) = delete;
  StandaloneStore& operator=(const StandaloneStore&) = delete;

  const std::string& path() const { return path_; }

  // The pods the previous run left. No file, or one from an earlier boot:
  // none. A file that cannot be read, is damaged or has an unknown version
  // is logged, moved aside to <path>.bad, and gives none.
  std::vector<StoredPod> load();

  // Remember or forget a pod, then rewrite the file. A failed write is
  // logged and counted and the caller goes on: its pod is enrolled, only a
  // restart before the next successful write would lose it.
  void put(const StoredPod& p);
  void erase(const std::string& uid);
  // Replaces the whole set (after a restart, with the pods that survived).
  void reset(const std::vector<StoredPod>& pods);

  // Writes the file again if the last write failed (a full or missing run
  // dir), even with no change since: the agent calls it every few seconds
  // and at shutdown, so a run dir that has room again loses no pod at the
  // next restart.
  void flush();

  uint64_t write_failures() const { return failures_; }

 private:
  void commit(uint64_t generation);
  void write_locked();  // under write_mu_

  const std::string path_;
  const std::string boot_id_;
  mutable std::mutex mu_;  // pods_ and generation_, held only to change or copy them
  std::map<std::string, std::string> pods_;  // each pod's encoded entry, by UID
  uint64_t generation_ = 0;
  std::mutex write_mu_;   // one write at a time
  uint64_t written_ = 0;  // the generation the last write carried (under write_mu_)
  bool unsaved_ = false;  // that write failed (under write_mu_)
  std::atomic<uint64_t> failures_{0};
  prometheus::Counter* const failures_metric_;
};

// What became of a stored pod's netns since the pod was stored.
enum class NetnsFate {
  Same,         // the path opens the very netns that was stored
  Unreachable,  // the path exists but does not open as a netns: cannot tell
  Gone,         // no such path, or it names another netns now
};
struct Reopened {
  NetnsFate fate;
  netns::NetnsRef ns;  // set when Same
  std::string why;     // what was found, for the log
};
Reopened reopen_netns(const StoredPod& p);

struct RestoreCounts {
  size_t adopted = 0;  // netns reopened, rules reconciled
  size_t kept = 0;     // cached without a netns: ztunnel gets Keep
  size_t dropped = 0;  // left out: ztunnel drains them
};

// Startup in standalone mode, before ztunnel may connect. Each stored pod
// by the fate of its netns: Same → re-adopted (its rules checked and
// rebuilt where wrong when `reconcile_rules`, never installed twice);
// Unreachable → cached without a netns, so ztunnel keeps the proxy it
// runs; Gone → dropped, so ztunnel drains it. The file is then rewritten
// with the pods kept.
RestoreCounts restore_enrollments(StandaloneStore& store, Agent& agent, bool reconcile_rules);

}  // namespace ambient::agent
