// The iptables backend against a real, empty pod netns: install, verify,
// idempotency, rollback on failure, removal without residue.
#include <catch2/catch.hpp>

#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "netns/netns.h"
#include "process/process.h"
#include "redirect/iptables/backend.h"
#include "support/test_netns.h"
#include "support/text.h"

using namespace ambient;
using namespace ambient::redirect;
using ambient::test::count_of;
using ambient::test::TestNetns;

namespace {

// An iptables-save dump's rules (legacy prints policy counters even without -c).
std::string rule_lines(const std::string& save_output) {
  std::istringstream in(save_output);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("-A ", 0) == 0) out += line + "\n";
  }
  return out;
}

// The iptables-nft binaries; the checks below read with them too.
std::unique_ptr<IptablesBackend> backend() {
  return std::make_unique<IptablesBackend>(IptablesOptions{.variant = IptablesVariant::Nft});
}

}  // namespace

TEST_CASE("iptables backend installs, verifies and removes without residue", "[iptables]") {
  TestNetns pod;
  auto b = backend();
  PodRedirectConfig cfg{.dns_capture = true, .ipv6 = true};

  auto before = b->verify(pod.ns(), cfg);
  REQUIRE(before);
  CHECK_FALSE(before->complete);

  REQUIRE(b->install(pod.ns(), cfg));
  auto after = b->verify(pod.ns(), cfg);
  REQUIRE(after);
  INFO((after->problems.empty() ? std::string() : after->problems.front()));
  CHECK(after->complete);
  CHECK_THAT(pod.exec({"ip", "rule"}), Catch::Contains("fwmark 0x111/0xfff lookup 100"));
  CHECK_THAT(pod.exec({"ip", "-6", "rule"}), Catch::Contains("fwmark 0x111/0xfff lookup 100"));
  CHECK_THAT(pod.exec({"ip", "route", "show", "table", "100"}),
             Catch::Contains("local default dev lo"));
  CHECK_THAT(pod.exec({"ip6tables-nft-save"}), Catch::Contains("-j REDIRECT --to-ports 15001"));

  SECTION("installing again changes nothing and never duplicates") {
    std::string v4 = pod.exec({"iptables-nft-save"});
    REQUIRE(b->install(pod.ns(), cfg));
    REQUIRE(b->install(pod.ns(), cfg));
    CHECK(count_of(pod.exec({"iptables-nft-save"}), "-A ") == count_of(v4, "-A "));
    CHECK(count_of(pod.exec({"ip", "rule"}), "0x111/0xfff") == 1);
  }
  SECTION("a changed configuration is rebuilt, not stacked") {
    PodRedirectConfig no_dns{.dns_capture = false, .ipv6 = true};
    REQUIRE(b->install(pod.ns(), no_dns));
    auto v = b->verify(pod.ns(), no_dns);
    REQUIRE(v);
    CHECK(v->complete);
    std::string saved = pod.exec({"iptables-nft-save"});
    CHECK(saved.find("15053") == std::string::npos);
    CHECK(count_of(saved, "-A ISTIO_OUTPUT") == 5);  // nat 4 (probe, 0x111, lo, 15001) + mangle 1
  }
  SECTION("a rule removed behind our back is found by verify and restored by install") {
    pod.exec({"iptables-nft", "-t", "nat", "-F", "ISTIO_OUTPUT"});
    auto v = b->verify(pod.ns(), cfg);
    REQUIRE(v);
    CHECK_FALSE(v->complete);
    REQUIRE(b->install(pod.ns(), cfg));
    CHECK(b->verify(pod.ns(), cfg)->complete);
  }

  REQUIRE(b->remove(pod.ns(), cfg));
  CHECK(pod.exec({"iptables-nft-save"}).find("ISTIO") == std::string::npos);
  CHECK(pod.exec({"ip6tables-nft-save"}).find("ISTIO") == std::string::npos);
  CHECK(pod.exec({"ip", "rule"}).find("0x111") == std::string::npos);
  CHECK(pod.exec({"ip", "route", "show", "table", "100"}).empty());
  REQUIRE(b->remove(pod.ns(), cfg));  // idempotent
}

TEST_CASE(
    "a new pod needs no iptables-save, a pod with exactly our rules no exec at all; "
    "changes are still found",
    "[iptables]") {
  const IptablesVariant variant = GENERATE(IptablesVariant::Nft, IptablesVariant::Legacy);
  const std::string iptables(variant_name(variant));
  INFO(iptables);
  IptablesBackend b({.variant = variant});
  const std::string save = iptables_binary(variant, IpFamily::V4, "-save");
  const std::string ip6 = iptables_binary(variant, IpFamily::V6, "");
  PodRedirectConfig cfg{.dns_capture = true, .ipv6 = true};
  TestNetns first, second;
  // Fresh netns: routing and one iptables-restore per IP family, nothing else.
  uint64_t n = commands_started();
  REQUIRE(b.install(first.ns(), cfg));
  CHECK(commands_started() - n == 2);
  REQUIRE(b.install(second.ns(), cfg));
  // Traffic through one of them: counters differ, rules do not.
  second.exec({"bash", "-c", "for i in 1 2 3; do : 2>/dev/null </dev/tcp/127.0.0.1/9; done; true"});
  CHECK_THAT(second.exec({save, "-c", "-t", "nat"}),
             !Catch::Contains("[0:0] -A OUTPUT -j ISTIO_OUTPUT"));
  // The first check of a rule set makes its reference in a scratch netns
  // (a restore and a save per IP family); after that, equal pods need no exec.
  n = commands_started();
  REQUIRE(b.verify(first.ns(), cfg)->complete);
  CHECK(commands_started() - n == 4);
  n = commands_started();
  REQUIRE(b.verify(second.ns(), cfg)->complete);  // counters differ: still the same rule set
  CHECK(commands_started() == n);
  const std::string once = rule_lines(second.exec({save, "-t", "nat"}));
  n = commands_started();
  REQUIRE(b.install(second.ns(), cfg));  // exactly right: left alone, without an exec
  CHECK(commands_started() == n);
  CHECK(rule_lines(second.exec({save, "-t", "nat"})) == once);
  SECTION("a rule rewritten in place (same count) is found") {
    second.exec({iptables, "-t", "nat", "-R", "ISTIO_OUTPUT", "4", "-p", "tcp", "-j", "REDIRECT",
                 "--to-ports", "15002"});
    auto v = b.verify(second.ns(), cfg);
    REQUIRE(v);
    CHECK_FALSE(v->complete);
    REQUIRE(b.install(second.ns(), cfg));
    CHECK(b.verify(second.ns(), cfg)->complete);
    CHECK(second.exec({save, "-t", "nat"}).find("15002") == std::string::npos);
  }
  SECTION("an IPv6 chain flushed") {
    second.exec({ip6, "-t", "nat", "-F", "ISTIO_PRERT"});
    CHECK_FALSE(b.verify(second.ns(), cfg)->complete);
  }
  SECTION("a built-in chain's policy changed") {
    second.exec({iptables, "-t", "mangle", "-P", "PREROUTING", "DROP"});
    n = commands_started();
    CHECK(b.verify(second.ns(), cfg)->complete);  // not ours to judge, but read again
    CHECK(commands_started() > n);
  }
  SECTION("someone else's rule in a table of ours: still complete") {
    second.exec(
        {iptables, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "RETURN"});
    CHECK(b.verify(second.ns(), cfg)->complete);
  }
  SECTION("someone else's nft table next to ours: still complete") {
    second.exec({"nft", "add", "table", "inet", "other"});
    CHECK(b.verify(second.ns(), cfg)->complete);
  }
}

TEST_CASE("a failure half-way through install leaves nothing behind", "[iptables]") {
  TestNetns pod;
  auto b = backend();
  // v4 applies, then v6 fails on an interface name iptables rejects: the
  // v4 rules that did go in must be taken out again.
  PodRedirectConfig bad{.ipv6 = true};
  bad.probe_snat_ipv6 = "not-an-address";
  auto r = b->install(pod.ns(), bad);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("ip6tables") && Catch::Contains("install"));
  CHECK(pod.exec({"iptables-nft-save"}).find("ISTIO") == std::string::npos);
  CHECK(pod.exec({"ip6tables-nft-save"}).find("ISTIO") == std::string::npos);
  CHECK(pod.exec({"ip", "rule"}).find("0x111") == std::string::npos);
}

TEST_CASE("sandboxed commands get no NSS, a private /run and their own xtables lock", "[sandbox]") {
  auto r = run_checked({.argv = {"sh", "-c",
                                 "wc -c < /etc/nsswitch.conf; ls -A /run | wc -l; "
                                 "echo \"$XTABLES_LOCKFILE\"; echo \"$PATH\""},
                        .sandbox = true});
  REQUIRE(r);
  CHECK_THAT(r->err, !Catch::Contains("sandbox"));  // no fallback warning
  std::istringstream out(r->out);
  std::string nss, run_entries, lock, path;
  std::getline(out, nss);
  std::getline(out, run_entries);
  std::getline(out, lock);
  std::getline(out, path);
  CHECK(nss == "0");          // /dev/null over nsswitch.conf
  CHECK(run_entries == "0");  // a fresh tmpfs, not the host's /run
  CHECK(lock == "/run/xtables.lock");
  CHECK_FALSE(path.empty());  // the environment is kept (upstream dropped PATH)
  // The host's view is untouched.
  auto host = run_checked({.argv = {"sh", "-c", "wc -c < /etc/nsswitch.conf"}});
  REQUIRE(host);
  CHECK(host->out != "0\n");
}

TEST_CASE("sandboxed commands of one thread share a mount namespace; other threads get their own",
          "[sandbox]") {
  auto mntns = [] {
    auto r = run_checked({.argv = {"readlink", "/proc/self/ns/mnt"}, .sandbox = true});
    REQUIRE(r);
    return r->out;
  };
  auto host = run_checked({.argv = {"readlink", "/proc/self/ns/mnt"}});
  REQUIRE(host);
  const std::string first = mntns();
  CHECK(first != host->out);
  CHECK(mntns() == first);  // entered again, not made again
  std::string other;
  std::thread([&] { other = mntns(); }).join();
  CHECK(other != first);  // so concurrent commands never share an xtables lock
  CHECK(other != host->out);
}
