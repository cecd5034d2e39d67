// Host probe SNAT rule text against upstream's hostprobe goldens, and the
// kubelet UID scan over a fake /proc.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>

#include "redirect/host.h"
#include "redirect/kubelet_uid.h"
#include "support/files.h"
#include "support/golden.h"
#include "support/temp_dir.h"

using namespace ambient;
using namespace ambient::redirect;
using ambient::test::kGoldenProbeSnatIpv6;
using ambient::test::read_golden;
using ambient::test::TempDir;
using ambient::test::write_file;

namespace {

// The iptables golden minus its two save probes ("iptables-save",
// "ip6tables-save"): the v4 restore text, then (with IPv6) a newline and the
// v6 restore text, no trailing newline.
std::string render_iptables(const HostProbeConfig& cfg) {
  std::string out = host_iptables_restore_text(cfg, IpFamily::V4);
  out.pop_back();
  if (cfg.ipv6) {
    std::string v6 = host_iptables_restore_text(cfg, IpFamily::V6);
    v6.pop_back();
    out += "\n" + v6;
  }
  return out;
}

std::string strip_save_probes(const std::string& golden) {
  const std::string probes = "iptables-save\nip6tables-save\n";
  REQUIRE(golden.rfind(probes, 0) == 0);
  return golden.substr(probes.size());
}

}  // namespace

TEST_CASE("host iptables rules with --socket-exists equal upstream's hostprobe goldens",
          "[host][golden]") {
  for (bool v6 : {false, true}) {
    HostProbeConfig cfg{.ipv6 = v6, .match = ProbeMatch::SocketExists};
    std::string name = std::string("iptables/hostprobe") + (v6 ? "_ipv6" : "") + ".golden";
    INFO(name);
    CHECK(render_iptables(cfg) == strip_save_probes(read_golden(name)));
  }
}

TEST_CASE("host iptables rules match kubelet's UID instead of any socket by default", "[host]") {
  HostProbeConfig cfg{.ipv6 = true, .kubelet_uid = 4242};
  for (IpFamily ip : kIpFamilies) {
    std::string text = host_iptables_restore_text(cfg, ip);
    CHECK_THAT(text, Catch::Contains("-m owner --uid-owner 4242 -p tcp -m set --match-set "
                                     "istio-inpod-probes-v" +
                                     std::string(ip == IpFamily::V6 ? "6" : "4")));
    CHECK(text.find("--socket-exists") == std::string::npos);
  }
  // Otherwise identical to the golden: only the owner match differs.
  HostProbeConfig compat = cfg;
  compat.match = ProbeMatch::SocketExists;
  std::string expected = host_iptables_restore_text(compat, IpFamily::V4);
  expected.replace(expected.find("--socket-exists"), 15, "--uid-owner 4242");
  CHECK(host_iptables_restore_text(cfg, IpFamily::V4) == expected);
}

TEST_CASE("host nftables rules equal upstream's hostprobe goldens", "[host][golden]") {
  for (bool v6 : {false, true}) {
    HostProbeConfig cfg{.ipv6 = v6,
                        .snat_v6 = kGoldenProbeSnatIpv6,
                        .match = ProbeMatch::KubeletUid,
                        .kubelet_uid = 1000};
    std::string name = std::string("nftables/hostprobe") + (v6 ? "_ipv6" : "") + ".golden";
    INFO(name);
    CHECK(host_nft_text(cfg) == read_golden(name));
  }
}

TEST_CASE("host nftables rules without a UID match any local socket", "[host]") {
  HostProbeConfig cfg{.match = ProbeMatch::SocketExists};
  CHECK_THAT(host_nft_text(cfg), Catch::Contains("meta l4proto tcp skuid >= 0 ip daddr "
                                                 "@istio-inpod-probes-v4 counter snat to "
                                                 "169.254.7.127\n"));
}

TEST_CASE("a configured SNAT address reaches both backends' host rules", "[host]") {
  HostProbeConfig cfg{.ipv6 = true, .snat_v4 = "169.254.99.1", .snat_v6 = "fd00::99"};
  CHECK_THAT(host_iptables_restore_text(cfg, IpFamily::V4),
             Catch::Contains("--to-source 169.254.99.1"));
  CHECK_THAT(host_iptables_restore_text(cfg, IpFamily::V6),
             Catch::Contains("--to-source fd00::99"));
  CHECK_THAT(host_nft_text(cfg),
             Catch::Contains("snat to 169.254.99.1\n") && Catch::Contains("snat to fd00::99\n"));
}

TEST_CASE("pod UIDs that could break out of a set comment are rejected", "[host]") {
  CHECK(validate_pod_uid("863b91d4-4b68-4efa-917f-4b560e3e86aa"));
  CHECK_FALSE(validate_pod_uid(""));
  CHECK_FALSE(validate_pod_uid("x\" }; flush ruleset; #"));
  CHECK_FALSE(validate_pod_uid("a b"));
  CHECK_FALSE(validate_pod_uid(std::string(129, 'a')));
  auto r = validate_pod_uid("a;b");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::InvalidArgument);
}

namespace {

// A fake /proc: <root>/<pid>/{comm,cmdline,status}.
class FakeProc {
 public:
  // `cmdline` uses '|' for the NULs between arguments.
  void add(int pid, const std::string& comm, std::string cmdline, int uid) {
    const std::string dir = root() + "/" + std::to_string(pid);
    std::filesystem::create_directories(dir);
    for (char& c : cmdline) {
      if (c == '|') c = '\0';
    }
    write_file(dir + "/comm", comm + "\n");
    write_file(dir + "/cmdline", cmdline + std::string(1, '\0'));
    if (uid >= 0) {
      write_file(dir + "/status", "Name:\t" + comm +
                                      "\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t" +
                                      std::to_string(uid) + "\t" + std::to_string(uid + 1) +
                                      "\t0\t0\n" + "Gid:\t0\t0\t0\t0\n");
    }
  }
  void add_file(const std::string& name) { write_file(root() + "/" + name, "x"); }
  const std::string& root() const { return dir_.path(); }

 private:
  TempDir dir_{"ambient-kubelet-proc-"};
};

}  // namespace

TEST_CASE("kubelet's UID is the real UID of the first kubelet process", "[host][kubelet]") {
  FakeProc proc;
  proc.add(1, "systemd", "/sbin/init", 0);
  proc.add(7, "containerd", "/usr/bin/containerd", 0);
  // comm says kubelet but nothing in its command line does: not kubelet.
  proc.add(20, "kubelet", "/opt/bin/wrapper|--foo", 5);
  proc.add(100, "kubelet", "/usr/bin/KUBELET|--config=/var/lib/kubelet/config.yaml", 1000);
  proc.add(30, "sshd", "sshd: kubelet [priv]", 0);     // the word alone does not make it kubelet
  proc.add(200, "kubelet", "/usr/bin/kubelet", 2000);  // later pid, numeric order: not chosen
  proc.add_file("self");                               // non-numeric entries are ignored
  auto uid = find_kubelet_uid(proc.root());
  REQUIRE(uid);
  CHECK(*uid == 1000u);  // the real UID (first field), not the effective one
}

TEST_CASE("MicroK8s kubelite and k3s count as kubelet", "[host][kubelet]") {
  SECTION("kubelite needs kubelet in its command line") {
    FakeProc proc;
    proc.add(40, "kubelite", "/snap/microk8s/1234/kubelite", 7);
    proc.add(41, "kubelite", "/snap/microk8s/1234/kubelite|--kubelet-args-file=/x/args/kubelet", 8);
    auto uid = find_kubelet_uid(proc.root());
    REQUIRE(uid);
    CHECK(*uid == 8u);
  }
  SECTION("k3s needs no command-line check") {
    FakeProc proc;
    proc.add(9, "k3s", "/usr/local/bin/k3s|server", 33);
    auto uid = find_kubelet_uid(proc.root());
    REQUIRE(uid);
    CHECK(*uid == 33u);
  }
  SECTION("numeric order, not name order, decides the first match") {
    FakeProc proc;
    proc.add(10, "k3s", "k3s|agent", 10);
    proc.add(9, "k3s", "k3s|agent", 9);
    auto uid = find_kubelet_uid(proc.root());
    REQUIRE(uid);
    CHECK(*uid == 9u);
  }
}

TEST_CASE("a kubelet that vanished mid-scan is skipped", "[host][kubelet]") {
  FakeProc proc;
  proc.add(5, "kubelet", "kubelet", -1);  // no status file any more
  proc.add(6, "kubelet", "kubelet", 4242);
  auto uid = find_kubelet_uid(proc.root());
  REQUIRE(uid);
  CHECK(*uid == 4242u);
}

TEST_CASE("no kubelet is an error naming where and what was searched", "[host][kubelet]") {
  FakeProc proc;
  proc.add(1, "systemd", "/sbin/init", 0);
  auto uid = find_kubelet_uid(proc.root());
  REQUIRE_FALSE(uid);
  CHECK(uid.error().code == Errc::NotFound);
  CHECK_THAT(uid.error().describe(),
             Catch::Contains(proc.root()) && Catch::Contains("kubelite") && Catch::Contains("k3s"));
  auto missing = find_kubelet_uid(proc.root() + "/does-not-exist");
  CHECK_FALSE(missing);
}
