// The real /proc scan dependencies against a real netns: a process is
// started inside a netns the test creates, and the real ownership check
// (enter the netns, list addresses) must see the address given there. When
// cgroupfs is writable the process is also put in a fake pod cgroup and the
// whole scan over the real /proc must find it.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>

#include "netns/proc_scan.h"
#include "support/files.h"
#include "support/ip_address.h"
#include "support/pod_sandbox.h"
#include "support/random.h"
#include "support/temp_dir.h"
#include "support/test_netns.h"

using namespace ambient;
using namespace ambient::netns;
using namespace ambient::test;
using namespace std::chrono_literals;

namespace {

// A netns without `lo` up: the tests bring it up themselves.
const NetnsOptions kBareNetns{.prefix = "amb-ps-", .lo_up = false};

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
  TempDir root("proc-scan-");
  std::filesystem::create_directories(root.path() + "/1/ns");
  std::filesystem::create_symlink("/proc/self/ns/net", root.path() + "/1/ns/net");
  auto stand_in = real_proc_scan_deps(root.path());
  REQUIRE(stand_in);
  CHECK(stand_in->host_netns == file_id("/proc/self/ns/net"));
  stand_in->proc_root = "/proc";
  return std::move(*stand_in);
}

}  // namespace

TEST_CASE("the real ownership check sees the addresses inside a process's netns", "[proc]") {
  ProcScanDeps deps = real_deps();
  TestNetns ns(kBareNetns);
  ns.exec({"ip", "link", "set", "lo", "up"});
  ns.exec({"ip", "addr", "add", "10.251.0.7/32", "dev", "lo"});
  ns.exec({"ip", "addr", "add", "fd00:251::7/128", "dev", "lo", "nodad"});
  ChildProcess sleeper({"ip", "netns", "exec", ns.name(), "sleep", "30"});
  REQUIRE(wait_until_in_netns(sleeper, ns.path(), 10s));

  auto netns = deps.open_netns(sleeper.proc_dir() + "/ns/net");
  REQUIRE(netns);
  CHECK(std::pair((*netns)->device(), (*netns)->inode()) == file_id(ns.path()));

  auto owns = [&](const std::vector<IpAddress>& ips) {
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

  TestNetns ns(kBareNetns);
  ns.exec({"ip", "link", "set", "lo", "up"});
  ns.exec({"ip", "addr", "add", "10.251.0.7/32", "dev", "lo"});
  FakePodCgroup cgroup("amb-ps-" + random_hex(8), uid,
                       cid);  // outlives the child: removable only once it is gone
  ChildProcess sleeper({"ip", "netns", "exec", ns.name(), "sleep", "30"});
  REQUIRE(wait_until_in_netns(sleeper, ns.path(), 10s));

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

  // The cgroup's UID pairs; with a single candidate the pod's IPs are not
  // consulted, so a pod whose status has none yet (or others) is found.
  for (const auto& ips : {std::vector<IpAddress>{}, std::vector<IpAddress>{ip("10.251.0.8")}}) {
    auto by_uid = scan_proc(deps, {{.uid = uid, .ips = ips}});
    REQUIRE(by_uid);
    REQUIRE(by_uid->count(uid) == 1);
    CHECK(std::pair(by_uid->at(uid).netns->device(), by_uid->at(uid).netns->inode()) ==
          file_id(ns.path()));
  }
}
