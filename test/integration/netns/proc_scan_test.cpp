// The real /proc scan dependencies against a real netns: a process is
// started inside a netns the test creates, and the real ownership check
// (enter the netns, list addresses) must see the address given there. When
// cgroupfs is writable the process is also put in a fake pod cgroup and the
// whole scan over the real /proc must find it.
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "netns/proc_scan.h"
#include "process/process.h"

extern char** environ;

using namespace ambient;
using namespace ambient::netns;

namespace {

std::string random_hex(size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  std::string out;
  while (out.size() < n) out += "0123456789abcdef"[rng() % 16];
  return out;
}

IpAddress ip(const char* text) {
  auto a = IpAddress::parse(text);
  REQUIRE(a);
  return *a;
}

std::pair<dev_t, ino_t> file_id(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {0, 0};
  return {st.st_dev, st.st_ino};
}

// A named netns (`ip netns add`), deleted even when the test fails.
class NamedNetns {
 public:
  NamedNetns() : name_("amb-ps-" + random_hex(8)) {
    REQUIRE(run_checked({.argv = {"ip", "netns", "add", name_}}));
  }
  ~NamedNetns() { (void)run_command({.argv = {"ip", "netns", "del", name_}}); }
  const std::string& name() const { return name_; }
  std::string path() const { return "/var/run/netns/" + name_; }
  void exec(std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {"ip", "netns", "exec", name_});
    REQUIRE(run_checked({.argv = argv}));
  }

 private:
  std::string name_;
};

// A background child, killed and reaped even when the test fails.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    REQUIRE(::posix_spawnp(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
  }
  ~Child() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  std::string proc_dir() const { return "/proc/" + std::to_string(pid_); }

 private:
  pid_t pid_ = -1;
};

// `ip netns exec` enters the netns after it starts, so the child's
// /proc/<pid>/ns/net is the host's for a moment. Polls with a deadline.
bool wait_for_netns(const Child& child, const NamedNetns& ns) {
  auto want = file_id(ns.path());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (file_id(child.proc_dir() + "/ns/net") == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// A cgroup directory chain made by the test, removed (deepest first) after
// the processes in it are gone. Empty when cgroupfs is not writable here.
class FakePodCgroup {
 public:
  FakePodCgroup(const std::string& uid, const std::string& cid) {
    // cgroup v1 "pids" hierarchy, else the v2 (or hybrid "unified") root.
    for (std::string root : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
      if (!std::filesystem::exists(root + "/cgroup.procs")) continue;
      top_ = root + "/amb-ps-" + random_hex(8);
      leaf_ = top_ + "/kubepods/besteffort/pod" + uid + "/" + cid;
      std::error_code ec;
      if (std::filesystem::create_directories(leaf_, ec)) return;
      remove();
    }
  }
  ~FakePodCgroup() { remove(); }
  bool usable() const { return !leaf_.empty(); }
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

// real_proc_scan_deps("/proc"). Some sandboxes hide pid 1's namespaces even
// from root; there the netns this test runs in stands in for the host's: the
// real function reads it through a root whose 1/ns/net links to our own.
ProcScanDeps real_deps() {
  auto deps = real_proc_scan_deps("/proc");
  if (deps) {
    CHECK(deps->host_netns == file_id("/proc/1/ns/net"));
    return std::move(*deps);
  }
  WARN("pid 1's netns is hidden here (" << deps.error().describe()
                                        << "); this process's netns stands in for the host's");
  std::string root = (std::filesystem::temp_directory_path() / "proc-scan-XXXXXX").string();
  REQUIRE(::mkdtemp(root.data()) != nullptr);
  std::filesystem::create_directories(root + "/1/ns");
  std::filesystem::create_symlink("/proc/self/ns/net", root + "/1/ns/net");
  auto stand_in = real_proc_scan_deps(root);
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
  REQUIRE(stand_in);
  CHECK(stand_in->host_netns == file_id("/proc/self/ns/net"));
  stand_in->proc_root = "/proc";
  return std::move(*stand_in);
}

}  // namespace

TEST_CASE("the real ownership check sees the addresses inside a process's netns", "[proc]") {
  ProcScanDeps deps = real_deps();
  NamedNetns ns;
  ns.exec({"ip", "link", "set", "lo", "up"});
  ns.exec({"ip", "addr", "add", "10.251.0.7/32", "dev", "lo"});
  ns.exec({"ip", "addr", "add", "fd00:251::7/128", "dev", "lo", "nodad"});
  Child sleeper({"ip", "netns", "exec", ns.name(), "sleep", "30"});
  REQUIRE(wait_for_netns(sleeper, ns));

  auto netns = deps.open_netns(sleeper.proc_dir() + "/ns/net");
  REQUIRE(netns);
  CHECK(std::pair((*netns)->device(), (*netns)->inode()) == file_id(ns.path()));

  auto owns = [&](std::vector<IpAddress> ips) {
    auto r = deps.owns_ips(**netns, ips);
    REQUIRE(r);
    return *r;
  };
  CHECK(owns({ip("10.251.0.7")}));
  CHECK(owns({ip("10.251.0.8"), ip("10.251.0.7")}));
  CHECK(owns({ip("::ffff:10.251.0.7")}));  // IPv4-mapped form
  CHECK(owns({ip("fd00:251::7")}));
  CHECK_FALSE(owns({ip("10.251.0.8")}));
  CHECK_FALSE(owns({ip("fd00:251::8")}));
  CHECK_FALSE(owns({}));

  // The same check on the netns this test runs in must not see it.
  auto host = deps.open_netns("/proc/self/ns/net");
  REQUIRE(host);
  auto on_host = deps.owns_ips(**host, {ip("10.251.0.7")});
  REQUIRE(on_host);
  CHECK_FALSE(*on_host);

  // Not a netns at all: the real open refuses it.
  CHECK_FALSE(deps.open_netns(sleeper.proc_dir() + "/stat"));
}

TEST_CASE("the /proc scan finds a pod process in a real netns and cgroup", "[proc]") {
  ProcScanDeps deps = real_deps();
  const std::string uid = random_hex(8) + "-" + random_hex(4) + "-" + random_hex(4) + "-" +
                          random_hex(4) + "-" + random_hex(12);
  const std::string cid = random_hex(64);

  NamedNetns ns;
  ns.exec({"ip", "link", "set", "lo", "up"});
  ns.exec({"ip", "addr", "add", "10.251.0.7/32", "dev", "lo"});
  FakePodCgroup cgroup(uid, cid);  // outlives the child: removable only once it is gone
  Child sleeper({"ip", "netns", "exec", ns.name(), "sleep", "30"});
  REQUIRE(wait_for_netns(sleeper, ns));

  // Whatever the cgroup setup, scanning the real /proc works and finds no
  // pod that has no process.
  auto none = scan_proc(
      deps, {{.uid = random_hex(8) + "-0000-0000-0000-000000000000", .ips = {ip("10.251.0.7")}}});
  REQUIRE(none);
  CHECK(none->empty());

  if (!cgroup.usable() || !cgroup.add(sleeper.pid())) {
    WARN("cgroupfs is not writable here: the full real-/proc scan is not exercised");
    return;
  }
  auto found = scan_proc(deps, {{.uid = uid, .ips = {ip("10.251.0.7")}}});
  REQUIRE(found);
  REQUIRE(found->count(uid) == 1);
  const FoundNetns& f = found->at(uid);
  CHECK(f.container_id == cid);
  CHECK(std::pair(f.netns->device(), f.netns->inode()) == file_id(ns.path()));
  CHECK(f.start_time > 0);

  // Fail closed: the same process does not make the pod's netns if the
  // pod's IP is not in it.
  auto wrong_ip = scan_proc(deps, {{.uid = uid, .ips = {ip("10.251.0.8")}}});
  REQUIRE(wrong_ip);
  CHECK(wrong_ip->empty());
}
