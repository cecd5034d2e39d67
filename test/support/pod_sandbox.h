// A pod's sandbox process as a container runtime leaves it and the agent's
// /proc scan finds it: a child process inside the pod's netns, in a
// kubepods-style cgroup named after the pod UID and container ID. Each
// piece is removed even when the test fails.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "support/files.h"
#include "support/wait.h"

extern char** environ;

namespace ambient::test {

// A child process (argv[0] looked up in PATH), killed and reaped when this
// goes away.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    INFO("spawning " << args.at(0));
    REQUIRE(::posix_spawnp(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
  }
  ~ChildProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  std::string proc_dir() const { return "/proc/" + std::to_string(pid_); }

 private:
  pid_t pid_ = -1;
};

// `ip netns exec` enters the netns after it starts, so for a moment the
// child's /proc/<pid>/ns/net is still ours: waits until it is the netns at
// `netns_path`. Whether it got there within `timeout`.
inline bool wait_until_in_netns(const ChildProcess& child, const std::string& netns_path,
                                std::chrono::milliseconds timeout) {
  const auto want = file_id(netns_path);
  return eventually([&] { return file_id(child.proc_dir() + "/ns/net") == want; }, timeout);
}

// A pod container's cgroup, <hierarchy>/<top>/kubepods/besteffort/pod<uid>/<cid>,
// in the first writable hierarchy (cgroup v1 "pids", else the v2 or hybrid
// "unified" root). Not usable() when cgroupfs is not writable here. Its
// directories go (deepest first) when this does, which cgroupfs allows only
// once the processes in it are gone: declare it before them.
class FakePodCgroup {
 public:
  FakePodCgroup(const std::string& top, const std::string& uid, const std::string& cid) {
    for (std::string root : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
      if (!std::filesystem::exists(root + "/cgroup.procs")) continue;
      top_ = root + "/" + top;
      leaf_ = top_ + "/kubepods/besteffort/pod" + uid + "/" + cid;
      std::error_code ec;
      if (std::filesystem::create_directories(leaf_, ec)) return;
      remove();
    }
  }
  ~FakePodCgroup() { remove(); }
  FakePodCgroup(const FakePodCgroup&) = delete;
  FakePodCgroup& operator=(const FakePodCgroup&) = delete;

  bool usable() const { return !leaf_.empty(); }
  // Moves `pid` into the cgroup; whether that worked.
  bool add(pid_t pid) const {
    std::ofstream f(leaf_ + "/cgroup.procs");
    f << pid << "\n";
    f.flush();
    return f.good();
  }

 private:
  void remove() {
    // rmdir only: cgroupfs directories cannot be emptied with unlink.
    for (std::string d = leaf_; !d.empty() && d.size() >= top_.size();
         d = std::filesystem::path(d).parent_path().string()) {
      ::rmdir(d.c_str());
    }
    leaf_.clear();
    top_.clear();
  }
  std::string top_, leaf_;
};

}  // namespace ambient::test
