// The runtime harness by itself: containerd in a netns playing the node,
// the reference bridge + host-local chain, a pod and a busybox container
// made through CRI, and nothing left behind once the harness is gone.
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cri_client.h"
#include "process/process.h"
#include "support/containerd.h"
#include "support/files.h"
#include "support/random.h"
#include "support/require_ok.h"
#include "support/temp_dir.h"
#include "support/test_netns.h"

namespace ambient::test {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::string random_uid() {
  return random_hex(8) + "-" + random_hex(4) + "-" + random_hex(4) + "-" + random_hex(4) + "-" +
         random_hex(12);
}

void print_ms(const char* what, std::chrono::steady_clock::time_point since) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - since)
                      .count();
  std::cout << "runtime-smoke: " << what << " " << ms << " ms\n";
}

// Runs `fn` and prints how long it took under `what`.
template <class F>
auto timed(const char* what, F fn) {
  const auto t0 = std::chrono::steady_clock::now();
  auto r = fn();
  print_ms(what, t0);
  return r;
}

// A CNI setup for one run: the plugins containerd needs, and a bridge
// conflist with a per-run bridge, subnet and network name.
struct CniSetup {
  TempDir tmp{"amb-cri-cni-"};
  std::string bin_dir = tmp.path() + "/bin", conf_dir = tmp.path() + "/net.d";
  std::string network = "amb-cri-" + random_hex(6);
  std::string bridge = "acri" + random_hex(6);
  int octet = static_cast<int>(std::stoul(random_hex(2), nullptr, 16));
  std::string subnet_prefix = "10.247." + std::to_string(octet) + ".";

  CniSetup() {
    fs::create_directories(bin_dir);
    fs::create_directories(conf_dir);
    for (const char* p : {"bridge", "host-local", "loopback"}) {
      fs::create_symlink(std::string("/usr/lib/cni/") + p, bin_dir + "/" + p);
    }
    json ipam = {{"type", "host-local"},
                 {"ranges", {{{{"subnet", subnet_prefix + "0/24"}}}}},
                 {"dataDir", tmp.path() + "/ipam"}};
    json conf = {{"cniVersion", "1.0.0"},
                 {"name", network},
                 {"plugins",
                  {{{"type", "bridge"},
                    {"bridge", bridge},
                    {"isGateway", true},
                    {"ipMasq", false},
                    {"ipam", ipam}}}}};
    write_file(conf_dir + "/10-test.conflist", conf.dump(2));
  }
};

cri::PodSandboxSpec pod_spec(const Containerd& c, const std::string& name) {
  cri::PodSandboxSpec s{.name = name, .ns = "default", .uid = random_uid()};
  s.log_directory = c.log_directory(s.ns, s.name, s.uid);
  s.cgroup_parent = c.cgroup_parent(s.uid);
  return s;
}

// What a finished run must not leave: its directory, mounts under it, pod
// cgroups, shims, CNI cache entries, the bridge in the node netns.
struct HostBefore {
  bool run_containerd = fs::exists("/run/containerd");
  std::string netns = read_netns_list();
  static std::string read_netns_list() {
    auto r = run_checked({.argv = {"ip", "netns", "list"}});
    return r ? r->out : "";
  }
};

void check_nothing_left(const std::string& dir, const std::string& cid, const CniSetup& cni,
                        const TestNetns& node, const HostBefore& before) {
  CHECK_FALSE(fs::exists(dir));
  if (!before.run_containerd) CHECK_FALSE(fs::exists("/run/containerd"));
  // No pod netns of ours stayed under /var/run/netns.
  std::istringstream netns(HostBefore::read_netns_list());
  for (std::string line; std::getline(netns, line);) {
    if (line.rfind("cni-", 0) == 0) CHECK(before.netns.find(line) != std::string::npos);
  }
  CHECK(read_file("/proc/self/mountinfo").find(dir) == std::string::npos);
  CHECK_FALSE(fs::exists("/sys/fs/cgroup/pids/amb-cri-" + cid));
  CHECK_FALSE(fs::exists("/sys/fs/cgroup/unified/amb-cri-" + cid));
  auto ps = run_command({.argv = {"pgrep", "-f", dir + "/containerd.sock"}});
  REQUIRE(ps);
  CHECK(ps->out.empty());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/var/lib/cni/results", ec)) {
    CHECK(e.path().filename().string().rfind(cni.network, 0) != 0);
  }
  CHECK(node.exec({"ip", "-o", "link"}).find("veth") == std::string::npos);
}

}  // namespace

TEST_CASE("containerd runs a pod and a busybox container through CRI, then leaves nothing",
          "[runtime]") {
  if (auto why = Containerd::missing_prerequisite(); !why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  const HostBefore host_before;
  TestNetns node(NetnsOptions{.prefix = "amb-cri-node-"});
  CniSetup cni;
  std::string dir, cid;
  auto teardown = std::chrono::steady_clock::now();
  {
    const bool under_state_dir = GENERATE(true, false);
    INFO("netns_under_state_dir=" << under_state_dir);
    const auto t0 = std::chrono::steady_clock::now();
    Containerd c({.cni_bin_dir = cni.bin_dir,
                  .cni_conf_dir = cni.conf_dir,
                  .netns = node.name(),
                  .netns_under_state_dir = under_state_dir});
    print_ms("containerd start + image import", t0);
    dir = c.dir();
    cid = c.id();
    INFO(c.reason());
    REQUIRE(c.available());
    auto& cri = c.cri();

    const auto spec = pod_spec(c, "smoke");
    auto sandbox = timed("RunPodSandbox", [&] { return cri.run_pod_sandbox(spec); });
    AMBIENT_REQUIRE_OK(sandbox);
    auto status = cri.pod_sandbox_status(*sandbox);
    AMBIENT_REQUIRE_OK(status);
    CHECK(status->ready);
    CHECK(status->ip.rfind(cni.subnet_prefix, 0) == 0);
    REQUIRE(status->pid > 0);
    // The sandbox's cgroup is <parent>/<id>, what the agent's /proc scan reads.
    CHECK(read_file("/proc/" + std::to_string(status->pid) + "/cgroup")
              .find(spec.cgroup_parent + "/" + *sandbox) != std::string::npos);
    CHECK(file_id(status->netns_path) ==
          file_id("/proc/" + std::to_string(status->pid) + "/ns/net"));

    cri::ContainerSpec box{
        .name = "box", .image = Containerd::kBusyboxImage, .command = {"sleep", "3600"}};
    auto ctr = timed("CreateContainer", [&] { return cri.create_container(*sandbox, box, spec); });
    AMBIENT_REQUIRE_OK(ctr);
    AMBIENT_REQUIRE_OK(timed("StartContainer", [&] { return cri.start_container(*ctr); }));

    auto addr = timed("ExecSync ip addr", [&] { return cri.exec_sync(*ctr, {"ip", "addr"}); });
    AMBIENT_REQUIRE_OK(addr);
    CHECK(addr->exit_code == 0);
    CHECK(addr->out.find(status->ip + "/24") != std::string::npos);
    auto fib = cri.exec_sync(*ctr, {"cat", "/proc/net/fib_trie"});
    AMBIENT_REQUIRE_OK(fib);
    CHECK(fib->out.find(status->ip) != std::string::npos);
    // The pod reaches the node's end of the bridge, and only that.
    auto ping = cri.exec_sync(*ctr, {"ping", "-c", "1", "-W", "2", cni.subnet_prefix + "1"});
    AMBIENT_REQUIRE_OK(ping);
    CHECK(ping->exit_code == 0);

    AMBIENT_REQUIRE_OK(timed("StopContainer", [&] { return cri.stop_container(*ctr); }));
    AMBIENT_REQUIRE_OK(timed("RemoveContainer", [&] { return cri.remove_container(*ctr); }));
    AMBIENT_REQUIRE_OK(timed("StopPodSandbox", [&] { return cri.stop_pod_sandbox(*sandbox); }));
    AMBIENT_REQUIRE_OK(timed("RemovePodSandbox", [&] { return cri.remove_pod_sandbox(*sandbox); }));
    CHECK_FALSE(fs::exists(status->netns_path));
    teardown = std::chrono::steady_clock::now();
  }
  print_ms("teardown (no pods left)", teardown);
  check_nothing_left(dir, cid, cni, node, host_before);
}

TEST_CASE("a pod keeps running across a containerd restart; the harness cleans up what is left",
          "[runtime]") {
  if (auto why = Containerd::missing_prerequisite(); !why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  const HostBefore host_before;
  TestNetns node(NetnsOptions{.prefix = "amb-cri-node-"});
  CniSetup cni;
  std::string dir, cid;
  {
    Containerd c({.cni_bin_dir = cni.bin_dir, .cni_conf_dir = cni.conf_dir, .netns = node.name()});
    dir = c.dir();
    cid = c.id();
    INFO(c.reason());
    REQUIRE(c.available());
    auto& cri = c.cri();
    const auto spec = pod_spec(c, "survivor");
    auto sandbox = cri.run_pod_sandbox(spec);
    AMBIENT_REQUIRE_OK(sandbox);
    auto before = cri.pod_sandbox_status(*sandbox);
    AMBIENT_REQUIRE_OK(before);

    AMBIENT_REQUIRE_OK(timed("containerd restart", [&] { return c.restart(); }));
    auto after = cri.pod_sandbox_status(*sandbox);
    AMBIENT_REQUIRE_OK(after);
    CHECK(after->ready);
    CHECK(after->pid == before->pid);
    CHECK(after->ip == before->ip);

    // A second pod after the restart; both are left for the destructor.
    auto second = cri.run_pod_sandbox(pod_spec(c, "after-restart"));
    AMBIENT_REQUIRE_OK(second);
  }
  check_nothing_left(dir, cid, cni, node, host_before);
}

TEST_CASE("the harness cleans up after containerd was killed with pods running", "[runtime]") {
  if (auto why = Containerd::missing_prerequisite(); !why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  const HostBefore host_before;
  TestNetns node(NetnsOptions{.prefix = "amb-cri-node-"});
  CniSetup cni;
  std::string dir, cid;
  auto teardown = std::chrono::steady_clock::now();
  int pause_pid = 0;
  {
    Containerd c({.cni_bin_dir = cni.bin_dir, .cni_conf_dir = cni.conf_dir, .netns = node.name()});
    dir = c.dir();
    cid = c.id();
    INFO(c.reason());
    REQUIRE(c.available());
    const auto spec = pod_spec(c, "orphan");
    auto sandbox = c.cri().run_pod_sandbox(spec);
    AMBIENT_REQUIRE_OK(sandbox);
    auto ctr = c.cri().create_container(
        *sandbox, {.name = "box", .image = Containerd::kBusyboxImage, .command = {"sleep", "3600"}},
        spec);
    AMBIENT_REQUIRE_OK(ctr);
    AMBIENT_REQUIRE_OK(c.cri().start_container(*ctr));
    auto status = c.cri().pod_sandbox_status(*sandbox);
    AMBIENT_REQUIRE_OK(status);
    pause_pid = status->pid;
    // No DEL will come: the shims, the pause and sleep processes, the
    // netns and rootfs mounts and the CNI cache entries stay behind.
    REQUIRE(::kill(c.pid(), SIGKILL) == 0);
    teardown = std::chrono::steady_clock::now();
  }
  print_ms("teardown (after SIGKILL, one pod running)", teardown);
  CHECK_FALSE(fs::exists("/proc/" + std::to_string(pause_pid)));
  check_nothing_left(dir, cid, cni, node, host_before);
}

}  // namespace ambient::test
