// Finding pod netns by scanning /proc (docs/node-agent.md#proc-scan), on
// upstream's fake /proc fixture and on small trees built per test. The ns/net
// files are plain files: their inodes stand in for network namespaces, and
// hard links stand in for two processes sharing one netns.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>

#include "netns/proc_scan.h"
#include "support/files.h"
#include "support/golden.h"
#include "support/ip_address.h"
#include "support/temp_dir.h"

using namespace ambient;
using namespace ambient::netns;
using ambient::test::file_id;
using ambient::test::ip;
using ambient::test::write_file;

namespace {

const std::string kFixture = ambient::test::golden_path("proc-cgroupns");
const std::string kFixtureUid = "863b91d4-4b68-4efa-917f-4b560e3e86aa";
const std::string kFixtureCid = "75c7fe7ad0df679971e755bd97b84dd68a32e1eba8e8f99b01ab3c07196a3e4a";
const std::string kOtherUid = "aaaabbbb-cccc-dddd-eeee-ffff00001111";
const std::string kOtherCid = "85c7fe7ad0df679971e755bd97b84dd68a32e1eba8e8f99b01ab3c07196a3e4a";

Result<NetnsRef> open_plain_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return sys_error("open " + path);
  AMBIENT_ASSIGN_OR_RETURN(Netns ns, Netns::from_fd_for_test(std::move(fd), path));
  return NetnsRef(std::make_shared<const Netns>(std::move(ns)));
}

ProcScanDeps fake_deps(const std::string& proc_root) {
  return ProcScanDeps{
      .proc_root = proc_root,
      .open_netns = &open_plain_file,
      .host_netns = {0, 0},
      .owns_ips = [](const Netns&, const std::vector<IpAddress>&) -> Result<bool> { return true; },
  };
}

// A /proc/<pid>/stat line with the given command name and start time.
std::string stat_line(uint64_t start_time, const std::string& comm = "pause") {
  return "42 (" + comm + ") S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 " +
         std::to_string(start_time) + " 1052672 1 18446744073709551615 1 1 0 0 0 0 0 0 0\n";
}

std::string pod_cgroup(const std::string& uid, const std::string& cid) {
  std::string underscored = uid;
  std::replace(underscored.begin(), underscored.end(), '-', '_');
  return "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + underscored +
         ".slice/cri-containerd-" + cid + ".scope\n";
}

// A throwaway /proc tree. Netns files live in `netns/` and are hard-linked
// into each process's ns/net, so processes can share a netns inode.
class FakeProc {
 public:
  FakeProc() { std::filesystem::create_directory(root() + "/netns"); }
  const std::string& root() const { return dir_.path(); }

  // Creates the netns file `netns` if needed; empty cgroup/stat text = no file.
  void add(const std::string& pid, const std::string& netns, const std::string& cgroup,
           const std::string& stat) {
    std::filesystem::create_directories(root() + "/" + pid + "/ns");
    std::string ns_file = root() + "/netns/" + netns;
    if (!std::filesystem::exists(ns_file)) write_file(ns_file, "");
    std::filesystem::create_hard_link(ns_file, root() + "/" + pid + "/ns/net");
    if (!cgroup.empty()) write_file(root() + "/" + pid + "/cgroup", cgroup);
    if (!stat.empty()) write_file(root() + "/" + pid + "/stat", stat);
  }
  std::string ns_path(const std::string& pid) const { return root() + "/" + pid + "/ns/net"; }

 private:
  ambient::test::TempDir dir_{"proc-scan-"};
};

}  // namespace

TEST_CASE("the /proc scan finds the fixture pod in its oldest process's netns", "[proc][golden]") {
  auto found = scan_proc(fake_deps(kFixture), {{.uid = kFixtureUid, .ips = {ip("10.0.0.5")}}});
  REQUIRE(found);
  REQUIRE(found->size() == 1);
  const FoundNetns& f = found->at(kFixtureUid);
  CHECK(f.start_time == 70298968);  // entry 1, the oldest of 0, 1 and 2
  CHECK(f.container_id == kFixtureCid);
  REQUIRE(f.netns);
  CHECK(f.netns->path() == kFixture + "/1/ns/net");
  CHECK(f.netns->inode() == file_id(kFixture + "/1/ns/net").second);
  CHECK(found->count(kOtherUid) == 0);  // in /proc but not wanted
}

TEST_CASE("the /proc scan returns every wanted pod and only those", "[proc][golden]") {
  auto found =
      scan_proc(fake_deps(kFixture),
                {{.uid = kFixtureUid, .ips = {ip("10.0.0.5")}},
                 {.uid = kOtherUid, .ips = {ip("fd00::7")}},
                 {.uid = "11111111-2222-3333-4444-555555555555", .ips = {ip("10.0.0.9")}}});
  REQUIRE(found);
  REQUIRE(found->size() == 2);
  CHECK(found->at(kFixtureUid).start_time == 70298968);
  CHECK(found->at(kOtherUid).start_time == 70299001);
  CHECK(found->at(kOtherUid).container_id == kOtherCid);

  auto none = scan_proc(fake_deps(kFixture), {});
  REQUIRE(none);
  CHECK(none->empty());
}

TEST_CASE("the /proc scan never returns the host netns", "[proc][golden]") {
  ProcScanDeps deps = fake_deps(kFixture);
  deps.host_netns = file_id(kFixture + "/1/ns/net");  // the oldest candidate is the host's
  auto found = scan_proc(deps, {{.uid = kFixtureUid, .ips = {ip("10.0.0.5")}}});
  REQUIRE(found);
  REQUIRE(found->count(kFixtureUid) == 1);
  CHECK(found->at(kFixtureUid).start_time == 70298977);  // entry 2, next oldest
  CHECK(found->at(kFixtureUid).netns->path() == kFixture + "/2/ns/net");
}

// docs/node-agent.md#proc-scan: the cgroup's pod UID pairs; IPs only break ties.
TEST_CASE("a pod without IPs in its status is found by its UID", "[proc]") {
  ProcScanDeps deps = fake_deps(kFixture);
  int checks = 0;
  deps.owns_ips = [&](const Netns&, const std::vector<IpAddress>&) -> Result<bool> {
    ++checks;
    return true;
  };
  auto found = scan_proc(deps, {{.uid = kFixtureUid, .ips = {}}});
  REQUIRE(found);
  REQUIRE(found->count(kFixtureUid) == 1);
  CHECK(found->at(kFixtureUid).start_time == 70298968);  // no IPs to compare: the oldest
  CHECK(found->at(kFixtureUid).netns->path() == kFixture + "/1/ns/net");
  CHECK(checks == 0);
}

TEST_CASE("a pod's only netns is taken without looking at its IPs", "[proc]") {
  FakeProc proc;
  proc.add("10", "a", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(100));
  proc.add("11", "a", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(150));  // a second container
  ProcScanDeps deps = fake_deps(proc.root());
  int checks = 0;
  deps.owns_ips = [&](const Netns&, const std::vector<IpAddress>&) -> Result<bool> {
    ++checks;
    return false;
  };
  auto found = scan_proc(deps, {{.uid = kFixtureUid, .ips = {ip("10.0.0.1")}}});
  REQUIRE(found);
  REQUIRE(found->count(kFixtureUid) == 1);
  CHECK(found->at(kFixtureUid).netns->path() == proc.ns_path("10"));
  CHECK(found->at(kFixtureUid).start_time == 100);
  CHECK(checks == 0);
}

TEST_CASE("a process visiting another pod's netns does not take it, even without IPs to compare",
          "[proc]") {
  // Pod B (not asked for) owns netns b; a process of pod A, started later,
  // has entered it.
  FakeProc proc;
  proc.add("10", "b", pod_cgroup(kOtherUid, kOtherCid), stat_line(100));
  proc.add("11", "b", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(200));
  SECTION("A's own netns is found") {
    proc.add("12", "a", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(150));
    auto found = scan_proc(fake_deps(proc.root()), {{.uid = kFixtureUid, .ips = {}}});
    REQUIRE(found);
    REQUIRE(found->count(kFixtureUid) == 1);
    CHECK(found->at(kFixtureUid).netns->path() == proc.ns_path("12"));
  }
  SECTION("without one, A gets nothing") {
    auto found = scan_proc(fake_deps(proc.root()), {{.uid = kFixtureUid, .ips = {}}});
    REQUIRE(found);
    CHECK(found->empty());
  }
}

TEST_CASE("the IP check breaks ties between netns of a pod and between pods of a netns", "[proc]") {
  SECTION("fixture: rejecting the oldest candidate falls back to the next oldest") {
    ProcScanDeps deps = fake_deps(kFixture);
    deps.owns_ips = [](const Netns& ns, const std::vector<IpAddress>&) -> Result<bool> {
      return ns.path() != kFixture + "/1/ns/net";
    };
    auto found = scan_proc(deps, {{.uid = kFixtureUid, .ips = {ip("10.0.0.5")}}});
    REQUIRE(found);
    REQUIRE(found->count(kFixtureUid) == 1);
    CHECK(found->at(kFixtureUid).start_time == 70298977);
  }
  SECTION("fixture: a check that fails everywhere leaves the choice to age") {
    ProcScanDeps deps = fake_deps(kFixture);
    bool fail_with_error = GENERATE(false, true);
    deps.owns_ips = [&](const Netns&, const std::vector<IpAddress>&) -> Result<bool> {
      if (fail_with_error) return make_error(Errc::Internal, "getifaddrs: boom");
      return false;
    };
    auto found = scan_proc(deps, {{.uid = kFixtureUid, .ips = {ip("10.0.0.5")}}});
    REQUIRE(found);
    REQUIRE(found->count(kFixtureUid) == 1);
    CHECK(found->at(kFixtureUid).start_time == 70298968);
  }
  SECTION("a foreign process visiting a pod's netns does not take it from that pod") {
    // pid 10 belongs (by cgroup) to pod A but sits in pod B's netns, which
    // holds only B's IP. It is scanned first; B's own process (pid 11) must
    // still get the netns, and A must get nothing.
    FakeProc proc;
    proc.add("10", "b", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(100));
    proc.add("11", "b", pod_cgroup(kOtherUid, kOtherCid), stat_line(200));
    ProcScanDeps deps = fake_deps(proc.root());
    const IpAddress b_ip = ip("10.0.0.11");
    bool fail_with_error = GENERATE(false, true);
    deps.owns_ips = [&](const Netns&, const std::vector<IpAddress>& ips) -> Result<bool> {
      bool owned = std::find(ips.begin(), ips.end(), b_ip) != ips.end();
      if (!owned && fail_with_error) return make_error(Errc::Internal, "getifaddrs: boom");
      return owned;
    };
    auto found = scan_proc(
        deps, {{.uid = kFixtureUid, .ips = {ip("10.0.0.10")}}, {.uid = kOtherUid, .ips = {b_ip}}});
    REQUIRE(found);
    CHECK(found->count(kFixtureUid) == 0);
    REQUIRE(found->count(kOtherUid) == 1);
    CHECK(found->at(kOtherUid).start_time == 200);
    CHECK(found->at(kOtherUid).netns->inode() == file_id(proc.ns_path("10")).second);
  }
}

TEST_CASE("a netns holding two wanted pods' processes goes to one of them only", "[proc]") {
  FakeProc proc;
  proc.add("10", "shared", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(300));
  proc.add("11", "shared", pod_cgroup(kOtherUid, kOtherCid), stat_line(100));
  // Both pods' IPs "are" in it: the pod of the oldest process wins.
  auto found = scan_proc(fake_deps(proc.root()), {{.uid = kFixtureUid, .ips = {ip("10.0.0.1")}},
                                                  {.uid = kOtherUid, .ips = {ip("10.0.0.2")}}});
  REQUIRE(found);
  CHECK(found->count(kFixtureUid) == 0);
  REQUIRE(found->count(kOtherUid) == 1);
  CHECK(found->at(kOtherUid).start_time == 100);
}

TEST_CASE("equally old candidates resolve to the lowest pid", "[proc]") {
  FakeProc proc;
  proc.add("9", "a", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(500));
  proc.add("10", "b", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(500));
  auto found = scan_proc(fake_deps(proc.root()), {{.uid = kFixtureUid, .ips = {ip("10.0.0.1")}}});
  REQUIRE(found);
  CHECK(found->at(kFixtureUid).netns->path() == proc.ns_path("9"));
}

TEST_CASE("unreadable and unparseable /proc entries are skipped", "[proc]") {
  FakeProc proc;
  const std::string good_cg = pod_cgroup(kFixtureUid, kFixtureCid);
  // Every broken entry is older than the good one, so had it been accepted
  // it would have won.
  proc.add("20", "good", good_cg, stat_line(1000));
  proc.add("21", "no-paren", good_cg, "21 pause S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5\n");
  proc.add("22", "short-stat", good_cg, "22 (pause) S 1 1 1\n");
  proc.add("23", "bad-start", good_cg,
           "23 (pause) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 x5 1\n");
  proc.add("24", "no-stat", good_cg, "");
  proc.add("25", "no-cgroup", "", stat_line(5));
  proc.add("26", "bad-cgroup", "garbage without colons\n", stat_line(5));
  proc.add("27", "two-containers",
           good_cg + "1:name=systemd:/kubepods/besteffort/pod" + kFixtureUid + "/other\n",
           stat_line(5));
  proc.add("28", "not-a-pod", "0::/system.slice/sshd.service\n", stat_line(5));
  proc.add("29", "crio-only", "0::/../crio-45490e76e0878aaa4d98.scope\n", stat_line(5));
  // A process that exited between readdir and stat: its ns/net is gone.
  std::filesystem::create_directories(proc.root() + "/30");
  write_file(proc.root() + "/30/cgroup", good_cg);
  write_file(proc.root() + "/30/stat", stat_line(5));
  // Not processes: a non-numeric directory and a numeric regular file.
  proc.add("self", "self", good_cg, stat_line(5));
  write_file(proc.root() + "/31", "");

  auto found = scan_proc(fake_deps(proc.root()), {{.uid = kFixtureUid, .ips = {ip("10.0.0.1")}},
                                                  {.uid = "", .ips = {ip("10.0.0.1")}}});
  REQUIRE(found);
  REQUIRE(found->size() == 1);
  CHECK(found->at(kFixtureUid).netns->path() == proc.ns_path("20"));
  CHECK(found->at(kFixtureUid).start_time == 1000);
}

TEST_CASE("a netns that cannot be opened is skipped", "[proc]") {
  FakeProc proc;
  proc.add("40", "a", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(1));
  proc.add("41", "b", pod_cgroup(kFixtureUid, kFixtureCid), stat_line(2));
  ProcScanDeps deps = fake_deps(proc.root());
  deps.open_netns = [&](const std::string& path) -> Result<NetnsRef> {
    if (path == proc.ns_path("40")) return make_error(Errc::InvalidArgument, "not nsfs");
    return open_plain_file(path);
  };
  auto found = scan_proc(deps, {{.uid = kFixtureUid, .ips = {ip("10.0.0.1")}}});
  REQUIRE(found);
  CHECK(found->at(kFixtureUid).netns->path() == proc.ns_path("41"));
}

TEST_CASE("a /proc root that cannot be listed is an error", "[proc]") {
  auto found = scan_proc(fake_deps("/nonexistent/proc"), {{.uid = kFixtureUid, .ips = {}}});
  REQUIRE_FALSE(found);
  CHECK_THAT(found.error().describe(), Catch::Contains("/nonexistent/proc"));
}

TEST_CASE("pod_from_cgroup reads the pod UID and container ID", "[proc]") {
  const std::string uid = "2c48913c-b29f-11e7-9350-020968147796";
  const std::string cid = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";
  const std::string crio = "45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814";
  struct Case {
    std::string name, content, uid, cid;
  };
  auto c = GENERATE_REF(values<Case>({
      {"systemd, containerd (fixture)", pod_cgroup(kFixtureUid, kFixtureCid), kFixtureUid,
       kFixtureCid},
      {"cgroupfs", "12:pids:/kubepods/besteffort/pod" + uid + "/" + cid + "\n", uid, cid},
      {"cgroupfs, '_' separators", "0::/kubepods/pod2c48913c_b29f_11e7_9350_020968147796/" + cid,
       uid, cid},
      {"cgroupfs, no separators", "0::/kubepods/pod2c48913cb29f11e79350020968147796/" + cid,
       "2c48913cb29f11e79350020968147796", cid},
      {"nested in docker",
       "0::/docker/8d461fa5765781bcf5f7eb192f101bc3103d4b932e26236f43feecfa20664f96/kubepods/"
       "besteffort/pod" +
           uid + "/" + cid + "\n",
       uid, cid},
      {"systemd, docker",
       "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid +
           ".slice/docker-" + cid + ".scope\n",
       uid, cid},
      {"systemd, cri-o",
       "0::/kubepods.slice/kubepods-burstable.slice/"
       "kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/crio-" +
           crio + ".scope\n",
       uid, crio},
      {"systemd, colon-separated runtime",
       "0::/kubepods-besteffort-pod72f7f152_440c_66ac_9084_e0fc1d8a910c.slice:cri-containerd:"
       "b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2\n",
       "72f7f152-440c-66ac-9084-e0fc1d8a910c",
       "b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2"},
      {"inside a cgroup namespace", "0::/../../pod" + uid + "/" + cid + "\n", uid, cid},
      {"cri-o without the pod UID", "0::/../crio-" + crio + ".scope\n", "", crio},
      {"cgroup v1, hierarchies agree",
       "12:pids:/kubepods/besteffort/pod" + uid + "/" + cid +
           "\n"
           "11:memory:/kubepods/besteffort/pod" +
           uid + "/" + cid +
           "\n"
           "10:cpu,cpuacct:/kubepods/besteffort/pod" +
           uid + "/" + cid +
           "\n"
           "1:name=systemd:/kubepods/besteffort/pod" +
           uid + "/" + cid + "\n0::/\n",
       uid, cid},
      {"cgroup v1, some hierarchies are not the pod's",
       "9:name=systemd:/\n4:memory:/process_api/945f19d4\n8:pids:/kubepods/besteffort/pod" + uid +
           "/" + cid + "\n0::/\n",
       uid, cid},
      {"CRLF line ends", "1:pids:/kubepods/pod" + uid + "/" + cid + "\r\n0::/\r\n", uid, cid},
      // Upstream canonicalises only Unicode punctuation; '$' is a symbol.
      {"symbol separators are kept", "0::/kubepods/pod2c48913c$b29f$11e7$9350$020968147796/" + cid,
       "2c48913c$b29f$11e7$9350$020968147796", cid},
  }));
  INFO(c.name);
  auto r = pod_from_cgroup(c.content);
  REQUIRE(r);
  REQUIRE(r->has_value());
  CHECK((*r)->first == c.uid);
  CHECK((*r)->second == c.cid);
}

TEST_CASE("pod_from_cgroup finds nothing in cgroups that are not a pod container's", "[proc]") {
  auto content =
      GENERATE(as<std::string>{}, "", "0::/\n", "0::/init.scope\n",
               "0::/user.slice/user-1000.slice/session-3.scope\n",
               "0::/system.slice/docker-"
               "8445c3ca20fac1d8e74854d84a7e6a57297ffb22809098b2816b31a428f2b777.scope\n",
               "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/945f19d4ff58ea4aa8f\n",
               // A pod cgroup itself, not one of its containers.
               "0::/kubepods/besteffort/pod2c48913c-b29f-11e7-9350-020968147796\n",
               // Both patterns match (no separators, then crio): ambiguous, as upstream.
               "0::/kubepods/pod2c48913cb29f11e79350020968147796/crio-abc\n");
  INFO(content);
  auto r = pod_from_cgroup(content);
  REQUIRE(r);
  CHECK_FALSE(r->has_value());
}

TEST_CASE("pod_from_cgroup rejects conflicting and malformed cgroup files", "[proc]") {
  const std::string cid1 = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";
  const std::string cid2 = "a55d9ac3b312d8a2627824b6d6dd8af66fbec439bf4e0ec22d6d9945ad337a38";
  struct Case {
    std::string name, content, message;
  };
  auto c = GENERATE_REF(values<Case>({
      {"two container IDs",
       "0::/user.slice\n1:pids:/kubepods/pod2c48913c-b29f-11e7-9350-020968147796/" + cid1 +
           "\n2:cpu:/kubepods/kubepods/besteffort/pod2c48913c-b29f-11e7-9350-020968147796/" + cid2 +
           "\n",
       "multiple container IDs found in cgroups (" + cid1 + ", " + cid2 + ")"},
      {"two pod UIDs",
       "0::/user.slice\n1:pids:/kubepods/pod11111111-b29f-11e7-9350-020968147796/" + cid1 +
           "\n2:cpu:/kubepods/kubepods/besteffort/pod22222222-b29f-11e7-9350-020968147796/" + cid1 +
           "\n",
       "multiple pod UIDs found in cgroups (11111111-b29f-11e7-9350-020968147796, "
       "22222222-b29f-11e7-9350-020968147796)"},
      {"a line without two colons", "0::/\n1:pids\n",
       "unable to obtain cgroups: cgroup entry has fewer than 2 colons: \"1:pids\""},
      {"an empty line between entries", "0::/\n\n1:pids:/\n",
       "unable to obtain cgroups: cgroup entry has fewer than 2 colons: \"\""},
  }));
  INFO(c.name);
  auto r = pod_from_cgroup(c.content);
  REQUIRE_FALSE(r);
  CHECK(r.error().message == c.message);
}

TEST_CASE("pod_from_cgroup stays fast on long paths", "[proc]") {
  // std::regex backtracks; the cri-o pattern as written upstream is
  // exponential in the length of a run of letters (RE2 is linear), and the
  // fixture's docker ID alone is a run of 64.
  std::string run(2000, 'a');
  std::string segments;
  while (segments.size() < 2000) segments += "ab/";
  auto r = pod_from_cgroup("0::/x/" + run + ".scope/crio\n1:pids:/" + run +
                           "/crio\n2:cpu:/kubepods/pod2c48913c-b29f-11e7-9350-020968147796/" +
                           segments + ".\n");
  REQUIRE(r);
  CHECK_FALSE(r->has_value());
}

TEST_CASE("start_time_from_stat reads field 22 after the command name", "[proc]") {
  struct Case {
    std::string name, line;
    uint64_t start;
  };
  auto c = GENERATE_REF(values<Case>({
      {"fixture line",
       "3331234 (sd_espeak-ng-mb) S 12634 12891 12891 0 -1 4194304 437 0 5 0 0 3 0 0 20 0 2 0 "
       "70298999 339460096 590 18446744073709551615 187654169755648 187654169783348 "
       "281474700653408 0 0 0 0 16777216 0 0 0 0 17 9 0 0 0 0 0 187654169950632 187654169952260 "
       "187655190429696 281474700669910 281474700670021 281474700670021 281474700672958 0\n",
       70298999},
      {"spaces in the name", stat_line(123, "a b c"), 123},
      {"')' and spaces in the name", stat_line(456, "x) S 1 2 3 (y) 7"), 456},
      {"name is ')'", stat_line(789, ")"), 789},
      {"no trailing newline", "1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 99", 99},
      {"largest value", stat_line(18446744073709551615ULL), 18446744073709551615ULL},
  }));
  INFO(c.name);
  auto r = start_time_from_stat(c.line);
  REQUIRE(r);
  CHECK(*r == c.start);
}

TEST_CASE("start_time_from_stat rejects malformed lines", "[proc]") {
  auto line = GENERATE(as<std::string>{}, "", "1 init S 0 1 1 0 -1 4 1 2 3 4 5 6 7 8 20 0 1 0 99",
                       "1 (init) S 0 1 1", "1 (init) S 0 1 1 0 -1 4 1 2 3 4 5 6 7 8 20 0 1 0 -99",
                       "1 (init) S 0 1 1 0 -1 4 1 2 3 4 5 6 7 8 20 0 1 0 99x",
                       "1 (init) S 0 1 1 0 -1 4 1 2 3 4 5 6 7 8 20 0 1 0 18446744073709551616");
  INFO(line);
  CHECK_FALSE(start_time_from_stat(line));
}
