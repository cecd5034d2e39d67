#include "netns/netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>

namespace ambient::netns {

Result<Netns> Netns::open(const std::string& path) {
  if (path.empty()) return make_error(Errc::InvalidArgument, "netns path is empty");
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) return sys_error("open netns " + path);
  return from_fd(std::move(fd), path);
}

Result<Netns> Netns::from_fd(UniqueFd fd, std::string path) {
  struct statfs sfs {};
  if (::fstatfs(fd.get(), &sfs) != 0) return sys_error("fstatfs " + path);
  if (sfs.f_type != NSFS_MAGIC) {
    return make_error(Errc::InvalidArgument,
                      path + " is not a network namespace (not an nsfs file)");
  }
  int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    return make_error(Errc::InvalidArgument, path + " is a namespace but not a network namespace");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("fstat " + path);
  return Netns(std::move(fd), std::move(path), st.st_dev, st.st_ino);
}

namespace {

bool is_file_name(std::string_view s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string_view::npos;
}

bool is_pid(std::string_view s) {
  return !s.empty() && s.size() <= 10 && s[0] != '0' &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

Result<Netns> open_requested(const std::string& host_root, const std::string& requested) {
  auto refuse = [&](const std::string& why) {
    Error e = make_error(Errc::InvalidArgument, "netns " + requested + ": " + why + ": refused");
    e.retryable = false;  // the same request is refused the same way next time
    return e;
  };
  if (requested.empty()) return refuse("no path given");
  // Split into the directory the runtime owns and the one name in it.
  std::string dir, leaf;
  bool proc = false;
  const std::string_view req = requested;
  for (std::string_view root : {"/var/run/netns/", "/run/netns/"}) {
    if (req.starts_with(root)) {
      dir = root.substr(0, root.size() - 1);
      leaf = req.substr(root.size());
    }
  }
  constexpr std::string_view kProc = "/proc/", kNsNet = "/ns/net";
  if (dir.empty() && req.size() > kProc.size() + kNsNet.size() && req.starts_with(kProc) &&
      req.ends_with(kNsNet) &&
      is_pid(req.substr(kProc.size(), req.size() - kProc.size() - kNsNet.size()))) {
    dir = std::string(req.substr(0, req.size() - std::string_view("/net").size()));
    leaf = "net";
    proc = true;
  }
  if (dir.empty() || !is_file_name(leaf)) {
    return refuse(
        "not a path a container runtime gives for a pod (/var/run/netns/<name>, "
        "/run/netns/<name> or /proc/<pid>/ns/net)");
  }
  const std::string full_dir = host_root + dir;
  const std::string full = full_dir + "/" + leaf;
  UniqueFd d(::open(full_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!d.valid()) return sys_error("open netns directory " + full_dir);
  if (proc) {
    // Only procfs makes ns/net a link to the process's namespace; anywhere
    // else it would be a link to whatever its writer chose.
    struct statfs sfs {};
    if (::fstatfs(d.get(), &sfs) != 0) return sys_error("fstatfs " + full_dir);
    if (sfs.f_type != PROC_SUPER_MAGIC) return refuse(full_dir + " is not on procfs");
  }
  // In procfs ns/net is the kernel's own link to the namespace and must be
  // followed; in a netns directory the runtime bind-mounts a file, and a
  // symlink there is someone else's.
  const int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (proc ? 0 : O_NOFOLLOW);
  UniqueFd fd(::openat(d.get(), leaf.c_str(), flags));
  if (!fd.valid()) {
    if (errno == ELOOP && !proc) {
      return refuse(full + " is a symbolic link (a runtime's netns file is a bind mount)");
    }
    return sys_error("open netns " + full);
  }
  auto ns = Netns::from_fd(std::move(fd), full);
  if (!ns) {
    Error e = std::move(ns).error();
    e.retryable = false;
    return e;
  }
  return ns;
}

Result<Netns> Netns::from_fd_for_test(UniqueFd fd, std::string path) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("fstat " + path);
  return Netns(std::move(fd), std::move(path), st.st_dev, st.st_ino);
}

namespace {

struct Job {
  const Netns* ns;
  const std::function<Result<>()>* fn;
  Result<> out;
  bool done = false;
};

// The workers behind run_in_netns. Never destroyed: workers may be busy
// while static destructors run at exit.
class Workers {
 public:
  Result<> run(const Netns& ns, const std::function<Result<>()>& fn) {
    Job job{.ns = &ns, .fn = &fn};
    std::unique_lock lk(mu_);
    if (!home_.valid()) {
      // The thread group leader's netns: the main thread never switches.
      home_.reset(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
      struct stat st {};
      if (!home_.valid() || ::fstat(home_.get(), &st) != 0) {
        home_.reset();
        return sys_error("open the agent's own netns (/proc/self/ns/net)");
      }
      home_ino_ = st.st_ino;
      home_dev_ = st.st_dev;
    }
    queue_.push_back(&job);
    if (idle_ == 0 && workers_ < kMaxNetnsWorkers) {
      ++workers_;
      std::thread([this] { serve(); }).detach();
    } else {
      work_cv_.notify_one();
    }
    done_cv_.wait(lk, [&] { return job.done; });
    return std::move(job.out);
  }

 private:
  void serve() {
    std::unique_lock lk(mu_);
    for (;;) {
      ++idle_;
      work_cv_.wait(lk, [&] { return !queue_.empty(); });
      --idle_;
      Job* job = queue_.front();
      queue_.pop_front();
      lk.unlock();
      const bool entered = ::setns(job->ns->fd(), CLONE_NEWNET) == 0;
      if (!entered) {
        job->out = sys_error("setns(" + job->ns->path() + ")");
      } else {
        job->out = (*job->fn)();
      }
      // The caller has its answer before this thread goes home: the way
      // back is not on its path. (job lives on the caller's stack: not
      // touched after this.)
      lk.lock();
      job->done = true;
      done_cv_.notify_all();
      lk.unlock();
      // Idle (and so eligible for the next job) only once proven home.
      const bool home = !entered || go_home();
      lk.lock();
      if (!home) {
        --workers_;
        return;  // retire: its netns is not the agent's
      }
    }
  }

  bool go_home() const {
    struct stat st {};
    return ::setns(home_.get(), CLONE_NEWNET) == 0 &&
           ::stat("/proc/thread-self/ns/net", &st) == 0 && st.st_ino == home_ino_ &&
           st.st_dev == home_dev_;
  }

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job*> queue_;
  size_t workers_ = 0, idle_ = 0;
  UniqueFd home_;
  ino_t home_ino_ = 0;
  dev_t home_dev_ = 0;
};

}  // namespace

Result<> run_in_netns(const Netns& ns, const std::function<Result<>()>& fn) {
  static Workers* workers = new Workers();
  return workers->run(ns, fn);
}

Result<> run_in_new_netns(const std::function<Result<>()>& fn) {
  Result<> out;
  // Its own thread, which never goes home: it ends, and the netns with it
  // once nothing else holds it.
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      out = sys_error("unshare(CLONE_NEWNET)");
      return;
    }
    out = fn();
  }).join();
  return out;
}

}  // namespace ambient::netns
