// Containerd: a private containerd for one test, driving the CNI chain
// through CRI as it does under kubelet. Its root, state, sockets and runc
// state live in a per-run directory; it runs in the caller's network
// namespace of choice (the simulated node's), so the bridge and every pod
// netns hang off that namespace and nothing reaches the real host's network.
// Images (a static pause as the sandbox image, busybox) are built locally
// once per test process and imported; no registry is contacted.
//
// The destructor tears everything down, also after a failed test: every
// sandbox is stopped and removed through CRI, containerd is stopped
// (SIGTERM, then SIGKILL), leftover shims and containers are killed, mounts
// under the run directory are detached, and the run's directory, its pod
// cgroups and the CNI result cache entries of its networks are removed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cri_client.h"
#include "lib/result.h"

namespace ambient::test {

struct ContainerdOptions {
  // What containerd's CRI plugin uses for pods: the plugin binaries (the
  // `loopback` plugin among them: containerd 1.6 sets up `lo` through it)
  // and the conflist directory, which must hold the conflist before
  // containerd starts (a file moved in later is not picked up; one
  // rewritten in place is).
  std::string cni_bin_dir;
  std::string cni_conf_dir;
  // An `ip netns` name: containerd (and so every CNI plugin it runs) lives
  // in that network namespace, with `lo` up (CRI's streaming server listens
  // on 127.0.0.1). Only the network namespace: mounts stay in the caller's
  // mount namespace, so pod netns and rootfs mounts are visible to the test
  // and the agent. Empty: the caller's, which only a test that already runs
  // in a namespace of its own may use.
  std::string netns;
  // Pod netns bind mounts under the run directory instead of
  // /var/run/netns/cni-<uuid> (kubelet's nodes use the latter).
  bool netns_under_state_dir = true;
  std::string work_root = "/tmp";
  // containerd usually answers within 0.5 s; on a loaded 2-core machine
  // its socket has been seen to lag for seconds.
  std::chrono::milliseconds start_timeout = std::chrono::seconds(30);
  std::string log_level = "info";  // "debug" logs every CNI call
};

class Containerd {
 public:
  static constexpr const char* kPauseImage = "localhost/ambient-test/pause:1";
  static constexpr const char* kBusyboxImage = "localhost/ambient-test/busybox:1";

  // Why containerd cannot run here (not root, a binary missing, no
  // overlayfs), or empty. Cheap: no process is started.
  static std::string missing_prerequisite();

  // Starts containerd and imports the images; on failure available() is
  // false and reason() says why (the log's tail included).
  explicit Containerd(ContainerdOptions opts);
  ~Containerd();
  Containerd(const Containerd&) = delete;
  Containerd& operator=(const Containerd&) = delete;

  bool available() const { return reason_.empty(); }
  const std::string& reason() const { return reason_; }

  const std::string& id() const { return id_; }
  const std::string& dir() const { return dir_; }
  std::string socket() const { return dir_ + "/containerd.sock"; }
  std::string log_path() const { return dir_ + "/containerd.log"; }
  std::string log() const;
  pid_t pid() const { return pid_; }
  cri::CriClient& cri() { return *cri_; }

  // A kubelet-style cgroup parent, unique to this run:
  // /amb-cri-<id>/kubepods/besteffort/pod<uid> (the agent's /proc scan
  // reads the pod UID from it; the destructor removes the tree).
  std::string cgroup_parent(const std::string& uid) const;
  // A pod's log directory under the run directory, as kubelet names it.
  std::string log_directory(const std::string& ns, const std::string& name,
                            const std::string& uid) const;

  // Stops containerd (SIGTERM; shims and pods keep running, as on a node)
  // and starts it again with the same config, waiting for CRI to answer.
  Result<> restart();
  // Stops containerd only; start() brings it back.
  void stop();
  Result<> start();

 private:
  Result<> prepare();
  Result<> spawn();
  Result<> wait_ready();
  Result<> import_images();
  void remove_pods();
  void kill_leftovers();
  void unmount_all();
  void remove_cgroups();
  void remove_cni_cache();
  std::string config_toml() const;

  ContainerdOptions opts_;
  std::string id_, dir_, reason_;
  pid_t pid_ = -1;
  std::unique_ptr<cri::CriClient> cri_;
  std::vector<std::string> network_names_;  // from the conflists, for the CNI cache
  bool made_run_containerd_ = false;        // /run/containerd did not exist before us
};

}  // namespace ambient::test
