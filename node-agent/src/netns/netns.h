// Network namespaces. Only this folder calls setns(): everything else asks
// run_in_netns() to run a function on one of a few dedicated worker
// threads, which enters the namespace, runs it, and goes back to the
// process's own netns. A worker that cannot prove it is back home retires,
// so no thread ever serves in the wrong namespace, and request-serving
// threads never switch.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include "lib/result.h"
#include "lib/unique_fd.h"

namespace ambient::netns {

class Netns {
 public:
  // Opens `path` and checks it is a network namespace (nsfs, type
  // CLONE_NEWNET). A plain file, a directory or another namespace type is
  // rejected with a message naming the path.
  static Result<Netns> open(const std::string& path);
  // Checks an fd opened by the caller as open() checks its own.
  static Result<Netns> from_fd(UniqueFd fd, std::string path);
  // Test-only: wraps any open fd (e.g. a plain file standing in for a netns
  // in a fake /proc) without the nsfs check; dev and inode come from fstat.
  static Result<Netns> from_fd_for_test(UniqueFd fd, std::string path);

  int fd() const { return fd_.get(); }
  ino_t inode() const { return ino_; }
  dev_t device() const { return dev_; }
  const std::string& path() const { return path_; }

 private:
  Netns(UniqueFd fd, std::string path, dev_t dev, ino_t ino)
      : fd_(std::move(fd)), path_(std::move(path)), dev_(dev), ino_(ino) {}
  UniqueFd fd_;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// The network namespace a CNI request names (CNI_NETNS), opened under the
// host root. A request is an instruction from outside the agent, so only
// the paths container runtimes give are accepted (docs/node-agent.md#netns-paths):
//   /var/run/netns/<name>, /run/netns/<name>  the runtime's bind mount, never
//                                            a symlink (opened O_NOFOLLOW);
//   /proc/<pid>/ns/net                       a process's netns, with <pid>
//                                            digits (not self or thread-self)
//                                            and <host root>/proc on procfs.
// Anything else, `..` included, is refused before anything is opened; what
// is opened must still be a network namespace. Refusals are not retryable.
// Which netns it is (the node's, the agent's) is the caller's to check.
Result<Netns> open_requested(const std::string& host_root, const std::string& requested);

// Shared so a ZDS send in flight keeps the fd open while the pod cache
// replaces or forgets the entry (docs/zds.md#fd-passing).
using NetnsRef = std::shared_ptr<const Netns>;

// Runs `fn` inside `ns` on a netns worker and waits for it. Workers are
// made on demand, up to kMaxNetnsWorkers at once; more callers queue.
// Reusing them saves a thread's creation and teardown (about 0.2 ms, most
// of it unmapping the stack) on every pod.
inline constexpr size_t kMaxNetnsWorkers = 8;
Result<> run_in_netns(const Netns& ns, const std::function<Result<>()>& fn);

// Runs `fn` on a thread of its own inside a new, empty network namespace
// that goes away after it: a scratch netns to try rules in. Processes `fn`
// starts there must be gone by the time it returns.
Result<> run_in_new_netns(const std::function<Result<>()>& fn);

}  // namespace ambient::netns
