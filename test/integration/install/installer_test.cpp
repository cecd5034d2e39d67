// The installer on a simulated node: temp CNI conf dir, bin dir, run dir.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "install/installer.h"
#include "support/files.h"
#include "support/pod_sandbox.h"
#include "support/require_ok.h"
#include "support/temp_dir.h"
#include "support/wait.h"

using namespace ambient;
using namespace ambient::install;
using namespace ambient::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct Node {
  TempDir dir{"amb-inst-"};
  std::string root = dir.path();
  Node() {
    for (const char* d : {"/net.d", "/bin-src", "/bin", "/run", "/sa"})
      fs::create_directories(root + d);
    write_file(root + "/sa/token", "tok-123");
    write_file(root + "/sa/ca.crt",
               "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    fs::copy_file("/bin/true", root + "/bin-src/istio-cni");
  }
  InstallerConfig config(const std::string& log_level = "info") const {
    InstallerConfig c;
    c.cni_net_dir = root + "/net.d";
    c.bin_source_dir = root + "/bin-src";
    c.bin_target_dirs = {root + "/bin"};
    c.run_dir = root + "/run";
    c.sa_dir = root + "/sa";
    c.k8s_host = "10.96.0.1";
    c.k8s_port = "443";
    c.entry = default_entry(log_level);
    return c;
  }
  static Json default_entry(const std::string& log_level) {
    Json selectors = Json::parse(R"([
      {"podSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}},"namespaceSelector":{}},
      {"namespaceSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}},
       "podSelector":{"matchExpressions":[{"key":"istio.io/dataplane-mode","operator":"NotIn","values":["none"]}]}}])");
    return plugin_entry(true, "/var/run/istio-cni", selectors, {"kube-system"}, "istio-system",
                        false, false, log_level);
  }
  std::string read(const std::string& rel) const { return read_file(root + "/" + rel); }
  void write(const std::string& rel, const std::string& text) const {
    write_file(root + "/" + rel, text);
  }
  // As another CNI (e.g. Cilium) does: a new file renamed over the old one.
  void stomp(const std::string& rel, const std::string& text) const {
    write_file(root + "/" + rel + ".other", text);
    fs::rename(root + "/" + rel + ".other", root + "/" + rel);
  }
};

const char* kBridge =
    R"({"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"bridge","bridge":"cni0",)"
    R"("ipam":{"type":"host-local","subnet":"10.22.0.0/16"}},{"type":"portmap","capabilities":{"portMappings":true}}]})";

// The entry exactly as upstream writes it (docs/installer.md#insertion),
// indented to its place in a conflist's plugins list.
std::string entry_block() {
  std::string spec = R"({
  "ambient_enabled": true,
  "cni_agent_run_dir": "/var/run/istio-cni",
  "dns": {},
  "enable_ambient_detection_retry": false,
  "enablement_selectors": [
    {
      "namespaceSelector": {},
      "podSelector": {
        "matchLabels": {
          "istio.io/dataplane-mode": "ambient"
        }
      }
    },
    {
      "namespaceSelector": {
        "matchLabels": {
          "istio.io/dataplane-mode": "ambient"
        }
      },
      "podSelector": {
        "matchExpressions": [
          {
            "key": "istio.io/dataplane-mode",
            "operator": "NotIn",
            "values": [
              "none"
            ]
          }
        ]
      }
    }
  ],
  "exclude_namespaces": [
    "kube-system"
  ],
  "ipam": {},
  "name": "istio-cni",
  "native_nftables": false,
  "plugin_log_level": "info",
  "pod_namespace": "istio-system",
  "type": "istio-cni"
})";
  std::string out, line;
  std::istringstream in(spec);
  while (std::getline(in, line)) out += "    " + line + "\n";
  out.pop_back();
  return out;
}

// A file of test/golden/installer (upstream's installer fixtures, see its
// README), found from this source file's path: integration-tests is built
// without a golden-dir definition.
std::string installer_fixture(const std::string& name) {
  const fs::path path = fs::path(__FILE__).parent_path() / "../../golden/installer" / name;
  auto text = try_read_file(path.string());
  INFO("fixture " << path.string());
  REQUIRE(text);
  return *text;
}

// The entry upstream's installer tests configure, which their expected
// files hold: log level debug, run dir "/path/to/kubeconfig", pod namespace
// "my-namespace", no enablement selectors, no excluded namespaces.
Json upstream_test_entry(bool ambient_enabled) {
  return plugin_entry(ambient_enabled, "/path/to/kubeconfig", Json::array(), {}, "my-namespace",
                      false, false, "debug");
}

// The Istio-owned file name upstream's tests use.
const std::string kUpstreamOwnedName = "02-istio-conf.conflist";

// One row of upstream's TestCreateCNIConfigFile.
struct CreateConfigCase {
  std::string name;       // upstream's name for the case
  bool chained;           // CHAINED_CNI_PLUGIN
  std::string conf_name;  // CNI_CONF_NAME
  std::string expected;   // the file written; empty: the pass fails and writes nothing
  std::string golden;     // its expected bytes
  std::vector<std::pair<std::string, std::string>> existing;  // fixture, file in the conf dir
  bool istio_owned;  // ISTIO_OWNED_CNI_CONFIG, with ambient on as upstream sets both
};

const std::vector<std::pair<std::string, std::string>> kBridgeAndList = {
    {"bridge.conf", "bridge.conf"}, {"list.conflist", "list.conflist"}};
const std::vector<std::pair<std::string, std::string>> kBridgeAndUndetectable = {
    {"bridge.conf", "bridge.conf"}, {"list.conflist", "undetectable.file"}};

// Upstream runs every row twice, the second time named "network-config-file
// <name>" with the same settings; one run here stands for both.
const std::vector<CreateConfigCase> kCreateConfigCases = {
    {"unspecified existing CNI config file (existing .conf to conflist)", true, "",
     "bridge.conflist", "bridge.conf.golden", kBridgeAndList, false},
    {"unspecified CNI config file never created", true, "", "", "", {}, false},
    {"specified existing CNI config file", true, "list.conflist", "list.conflist",
     "list.conflist.golden", kBridgeAndList, false},
    {"specified existing CNI config file (specified .conf to .conflist)", true, "list.conf",
     "list.conflist", "list.conflist.golden", kBridgeAndList, false},
    {"specified existing CNI config file (existing .conf to .conflist)", true, "bridge.conflist",
     "bridge.conflist", "bridge.conf.golden", kBridgeAndList, false},
    {"specified CNI config file never created", true, "never-created.conf", "", "", kBridgeAndList,
     false},
    {"specified CNI config file undetectable", true, "undetectable.file", "undetectable.file",
     "list.conflist.golden", kBridgeAndUndetectable, false},
    {"standalone CNI plugin unspecified CNI config file",
     false,
     "",
     "YYY-istio-cni.conf",
     "istio-cni.conf",
     {},
     false},
    {"standalone CNI plugin specified CNI config file",
     false,
     "specific-name.conf",
     "specific-name.conf",
     "istio-cni.conf",
     {},
     false},
    {"specified existing .conf primary CNI config file - istio owned", true, "bridge.conflist",
     kUpstreamOwnedName, "istio-owned-bridge.conflist.golden", kBridgeAndList, true},
    {"specified existing primary .conflist CNI config file - istio owned", true, "list.conflist",
     kUpstreamOwnedName, "istio-owned.conflist.golden", kBridgeAndList, true},
    {"specified existing CNI config file (specified .conf to .conflist) - istio owned", true,
     "list.conf", kUpstreamOwnedName, "istio-owned.conflist.golden", kBridgeAndList, true},
    {"specified existing CNI config file (existing .conf to .conflist) - istio owned", true,
     "bridge.conflist", kUpstreamOwnedName, "istio-owned-bridge.conflist.golden", kBridgeAndList,
     true},
    {"specified CNI config file never created - istio owned", true, kUpstreamOwnedName, "", "",
     kBridgeAndList, true},
    {"specified CNI config file undetectable - istio owned", true, "undetectable.file",
     kUpstreamOwnedName, "istio-owned.conflist.golden", kBridgeAndUndetectable, true},
};

// One row of upstream's TestInsertCNIConfig: `existing` gets the entry in
// `new_conf`; the result is `existing` + ".golden", or an error.
struct InsertConfigCase {
  std::string name, existing, new_conf;
  bool fails;
};

const std::vector<InsertConfigCase> kInsertConfigCases = {
    {"invalid existing config format (map)", "invalid-map.conflist", "istio-cni.conf", true},
    {"invalid new config format (arr)", "list.conflist", "invalid-arr.conflist", true},
    {"invalid existing config format (arr)", "invalid-arr.conflist", "istio-cni.conf", true},
    {"regular network file", "bridge.conf", "istio-cni.conf", false},
    {"list network file", "list.conflist", "istio-cni.conf", false},
    {"list network file with existing istio", "list-with-istio.conflist", "istio-cni.conf", false},
};

}  // namespace

TEST_CASE("installer: upstream's TestCreateCNIConfigFile cases", "[installer][upstream]") {
  for (const auto& c : kCreateConfigCases) {
    DYNAMIC_SECTION(c.name) {
      Node n;
      const std::string dir = n.root + "/net.d";
      for (const auto& [fixture, file] : c.existing) {
        n.write("net.d/" + file, installer_fixture(fixture));
      }
      auto cfg = n.config();
      cfg.chained = c.chained;
      cfg.cni_conf_name = c.conf_name;
      cfg.istio_owned = c.istio_owned;
      cfg.istio_owned_filename = kUpstreamOwnedName;
      cfg.entry = upstream_test_entry(c.istio_owned);
      Installer inst(cfg);
      auto path = inst.install_once();
      if (c.expected.empty()) {
        INFO("wrote " << (path ? *path : std::string()));
        CHECK_FALSE(path);
      } else {
        INFO((path ? std::string() : path.error().describe()));
        REQUIRE(path);
        CHECK(*path == dir + "/" + c.expected);
        CHECK(n.read("net.d/" + c.expected) == installer_fixture(c.golden));
      }
      // Nothing else is written, and only a chained .conf that became the
      // expected .conflist is gone (upstream renames it).
      std::set<std::string> want, got;
      if (!c.expected.empty()) want.insert(c.expected);
      for (const auto& [fixture, file] : c.existing) {
        if (file + "list" == c.expected) continue;
        want.insert(file);
        if (file != c.expected) {
          INFO(file << " is not ours to change");
          CHECK(n.read("net.d/" + file) == installer_fixture(fixture));
        }
      }
      for (const auto& e : fs::directory_iterator(dir)) got.insert(e.path().filename().string());
      CHECK(got == want);
    }
  }
}

TEST_CASE("installer: upstream's TestInsertCNIConfig cases", "[installer][upstream]") {
  for (const auto& c : kInsertConfigCases) {
    DYNAMIC_SECTION(c.name) {
      const Json entry = Json::parse(installer_fixture(c.new_conf));
      auto out = insert_entry(installer_fixture(c.existing), entry);
      if (c.fails) {
        CHECK_FALSE(out);
      } else {
        INFO((out ? std::string() : out.error().describe()));
        REQUIRE(out);
        CHECK(*out == installer_fixture(c.existing + ".golden"));
      }
    }
  }
}

TEST_CASE("installer: Istio-owned list from a .conf primary named with .conflist becomes ready",
          "[installer]") {
  // CNI_CONF_NAME says bridge.conflist; the primary CNI wrote bridge.conf.
  Node n;
  n.write("net.d/bridge.conf", installer_fixture("bridge.conf"));
  auto cfg = n.config();
  cfg.istio_owned = true;
  cfg.cni_conf_name = "bridge.conflist";
  cfg.entry = upstream_test_entry(true);
  Installer inst(cfg);
  std::atomic<bool> stop{false};
  std::thread t([&] { (void)inst.run(stop); });
  const bool ready = eventually([&] { return inst.ready(); }, 3s);
  stop = true;
  t.join();
  REQUIRE(ready);
  CHECK(n.read("net.d/02-istio-cni.conflist") ==
        installer_fixture("istio-owned-bridge.conflist.golden"));
  CHECK(n.read("net.d/bridge.conf") == installer_fixture("bridge.conf"));
  CHECK_FALSE(fs::exists(n.root + "/net.d/bridge.conflist"));
  CHECK(inst.repairs() == 1);  // written once, then found in place
}

TEST_CASE("installer: strings are escaped as Go's encoder escapes them", "[installer]") {
  Json entry = upstream_test_entry(false);
  entry["pod_namespace"] =
      "a<b&c>d\xE2\x80\xA8"
      "e\xE2\x80\xA9"
      "f";  // U+2028, U+2029
  const std::string want = R"("pod_namespace": "a\u003cb\u0026c\u003ed\u2028e\u2029f")";
  CHECK(standalone_conf(entry).find(want) != std::string::npos);
  auto merged = insert_entry(installer_fixture("list.conflist"), entry);
  REQUIRE(merged);
  CHECK(merged->find(want) != std::string::npos);
}

TEST_CASE("installer: insertion into a bridge conflist is formatted as upstream", "[installer]") {
  Node n;
  n.write("net.d/10-bridge.conflist", kBridge);
  Installer inst(n.config());
  auto path = inst.install_once();
  REQUIRE(path);
  CHECK(*path == n.root + "/net.d/10-bridge.conflist");
  const std::string want = std::string(R"({
  "cniVersion": "0.3.1",
  "name": "k8s-pod-network",
  "plugins": [
    {
      "bridge": "cni0",
      "ipam": {
        "subnet": "10.22.0.0/16",
        "type": "host-local"
      },
      "type": "bridge"
    },
    {
      "capabilities": {
        "portMappings": true
      },
      "type": "portmap"
    },
)") + entry_block() + "\n  ]\n}\n";
  CHECK(n.read("net.d/10-bridge.conflist") == want);

  SECTION("a list that already has an istio-cni entry gets no duplicate") {
    Installer again(n.config("debug"));
    REQUIRE(again.install_once());
    std::string text = n.read("net.d/10-bridge.conflist");
    CHECK(std::count(text.begin(), text.end(), 'i') > 0);
    size_t first = text.find("\"type\": \"istio-cni\"");
    CHECK(first != std::string::npos);
    CHECK(text.find("\"type\": \"istio-cni\"", first + 1) == std::string::npos);
    CHECK(text.find("\"plugin_log_level\": \"debug\"") != std::string::npos);
  }
}

TEST_CASE("installer: a single .conf is wrapped into a conflist as upstream does", "[installer]") {
  Node n;
  n.write("net.d/10-calico.conf",
          R"({"cniVersion":"0.3.0","name":"calico","type":"calico","note":"a<b&c>d"})");
  Installer inst(n.config());
  auto path = inst.install_once();
  REQUIRE(path);
  CHECK(*path == n.root + "/net.d/10-calico.conflist");
  CHECK_FALSE(fs::exists(n.root + "/net.d/10-calico.conf"));
  const std::string want = std::string(R"({
  "cniVersion": "0.3.1",
  "name": "k8s-pod-network",
  "plugins": [
    {
      "name": "calico",
      "note": "a\u003cb\u0026c\u003ed",
      "type": "calico"
    },
)") + entry_block() + "\n  ]\n}\n";
  CHECK(n.read("net.d/10-calico.conflist") == want);
}

TEST_CASE("installer: kubeconfig content and mode; binary replaced under a running reader",
          "[installer]") {
  Node n;
  n.write("net.d/10-bridge.conflist", kBridge);
  auto cfg = n.config();
  cfg.kubeconfig_mode = 0640;
  Installer inst(cfg);
  REQUIRE(inst.install_once());
  CHECK(n.read("run/istio-cni-kubeconfig") ==
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: "
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=\n"
        "    server: https://10.96.0.1:443\n  name: local\ncontexts:\n- context:\n"
        "    cluster: local\n    user: istio-cni\n  name: istio-cni-context\n"
        "current-context: istio-cni-context\nkind: Config\nusers:\n- name: istio-cni\n"
        "  user:\n    token: tok-123\n");
  struct stat st {};
  REQUIRE(::stat((n.root + "/run/istio-cni-kubeconfig").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);

  // A "runtime" executes the installed plugin while a new version arrives.
  fs::copy_file("/bin/sleep", n.root + "/bin/istio-cni", fs::copy_options::overwrite_existing);
  fs::copy_file("/bin/sleep", n.root + "/bin-src/istio-cni", fs::copy_options::overwrite_existing);
  ChildProcess reader({n.root + "/bin/istio-cni", "5"});
  std::this_thread::sleep_for(50ms);
  fs::copy_file("/bin/true", n.root + "/bin-src/istio-cni", fs::copy_options::overwrite_existing);
  auto r = inst.install_once();  // no ETXTBSY: the file is replaced, not written into
  INFO((r ? std::string() : r.error().describe()));
  CHECK(r);
  CHECK(n.read("bin/istio-cni") == n.read("bin-src/istio-cni"));
  CHECK(::kill(reader.pid(), 0) == 0);  // the reader still runs its (old) binary
}

TEST_CASE("installer: rewrites of the primary config by another CNI are repaired (stomp)",
          "[installer]") {
  Node n;
  n.write("net.d/05-cilium.conflist", kBridge);
  Installer inst(n.config());
  std::atomic<bool> stop{false};
  std::thread t([&] { (void)inst.run(stop); });
  auto has_entry = [&] {
    return n.read("net.d/05-cilium.conflist").find("istio-cni") != std::string::npos;
  };
  REQUIRE(eventually(has_entry, 3s));
  std::vector<double> ms;
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(200ms);  // Cilium rewrites now and then, not in a loop
    auto start = std::chrono::steady_clock::now();
    n.stomp("net.d/05-cilium.conflist", kBridge);
    REQUIRE(eventually(has_entry, 5s, 500us));
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  stop = true;
  t.join();
  std::sort(ms.begin(), ms.end());
  // A measurement, not an assertion: printed for the README's numbers.
  std::cout << "{\"bench\":\"stomp-repair\",\"runs\":" << ms.size()
            << ",\"median_ms\":" << ms[ms.size() / 2] << ",\"p99_ms\":" << ms[ms.size() * 99 / 100]
            << ",\"max_ms\":" << ms.back() << "}" << std::endl;
  CHECK(inst.throttled() == 0);  // occasional rewrites are not a fight
}

TEST_CASE("installer: two installers on one directory do not spin", "[installer]") {
  Node n;
  n.write("net.d/10-bridge.conflist", kBridge);
  // Different settings: each one's entry is "wrong" for the other.
  Installer a(n.config("info")), b(n.config("debug"));
  std::atomic<bool> stop{false};
  std::thread ta([&] { (void)a.run(stop); });
  std::thread tb([&] { (void)b.run(stop); });
  std::this_thread::sleep_for(3s);
  stop = true;
  ta.join();
  tb.join();
  const uint64_t writes = a.repairs() + b.repairs();
  INFO("writes in 3 s: " << writes);
  CHECK(a.throttled() + b.throttled() > 0);  // and the warning says so in the log
  CHECK(writes < 100);                       // unthrottled, they rewrite thousands of times
}

TEST_CASE("installer: uninstall removes only what is ours", "[installer]") {
  Node n;
  n.write("net.d/10-bridge.conflist", kBridge);
  Installer inst(n.config());
  REQUIRE(inst.install_once());
  REQUIRE(inst.cleanup());
  CHECK(Json::parse(n.read("net.d/10-bridge.conflist")) == Json::parse(kBridge));
  CHECK_FALSE(fs::exists(n.root + "/bin/istio-cni"));
  CHECK_FALSE(fs::exists(n.root + "/run/istio-cni-kubeconfig"));

  SECTION("Istio-owned conflist: our file goes, the primary is untouched byte for byte") {
    auto cfg = n.config();
    cfg.istio_owned = true;
    Installer owned(cfg);
    const std::string before = n.read("net.d/10-bridge.conflist");
    REQUIRE(owned.install_once());
    CHECK(fs::exists(n.root + "/net.d/02-istio-cni.conflist"));
    CHECK(n.read("net.d/10-bridge.conflist") == before);
    REQUIRE(owned.cleanup());
    CHECK_FALSE(fs::exists(n.root + "/net.d/02-istio-cni.conflist"));
    CHECK(n.read("net.d/10-bridge.conflist") == before);
  }
}

TEST_CASE("installer: a standalone conf keeps upstream's key order", "[installer]") {
  Node n;
  auto cfg = n.config();
  cfg.chained = false;
  Installer inst(cfg);
  auto path = inst.install_once();
  REQUIRE(path);
  CHECK(*path == n.root + "/net.d/YYY-istio-cni.conf");
  std::string text = n.read("net.d/YYY-istio-cni.conf");
  std::vector<std::string> keys;
  for (const char* k :
       {"cniVersion", "name", "type", "ipam", "dns", "plugin_log_level", "cni_agent_run_dir",
        "ambient_enabled", "enablement_selectors", "exclude_namespaces", "pod_namespace",
        "native_nftables", "enable_ambient_detection_retry"}) {
    keys.push_back(std::string("\n  \"") + k + "\"");
  }
  size_t pos = 0;
  for (const auto& k : keys) {
    size_t at = text.find(k);
    INFO(k);
    REQUIRE(at != std::string::npos);
    CHECK(at >= pos);
    pos = at;
  }
  REQUIRE(inst.cleanup());
  CHECK_FALSE(fs::exists(n.root + "/net.d/YYY-istio-cni.conf"));
}

// docs/node-agent.md#socket-security: no write of ours follows a symlink.
// Each planted link points at a file with exactly what we would write, so
// only a check of the link itself (not of the content) replaces it.
TEST_CASE("installer: symlinks planted in place of our files are replaced, their targets untouched",
          "[installer][security]") {
  Node n;
  fs::create_directories(n.root + "/victim");
  auto cfg = n.config();
  cfg.istio_owned = true;  // our own conflist, next to the primary
  n.write("net.d/10-bridge.conflist", kBridge);
  // What we would write, learned from a first install in a scratch node.
  Node scratch;
  scratch.write("net.d/10-bridge.conflist", kBridge);
  auto scratch_cfg = scratch.config();
  scratch_cfg.istio_owned = true;
  REQUIRE(Installer(scratch_cfg).install_once());
  const std::vector<std::pair<std::string, std::string>> ours = {
      {"bin/istio-cni", scratch.read("bin/istio-cni")},
      {"run/istio-cni-kubeconfig", scratch.read("run/istio-cni-kubeconfig")},
      {"net.d/02-istio-cni.conflist", scratch.read("net.d/02-istio-cni.conflist")}};
  for (const auto& [rel, text] : ours) {
    const std::string victim = n.root + "/victim/" + fs::path(rel).filename().string();
    write_file(victim, text);
    ::chmod(victim.c_str(), 0644);
    fs::create_symlink(victim, n.root + "/" + rel);
  }
  Installer inst(cfg);
  auto r = inst.install_once();
  INFO((r ? std::string() : r.error().describe()));
  REQUIRE(r);
  for (const auto& [rel, text] : ours) {
    INFO(rel);
    CHECK_FALSE(fs::is_symlink(n.root + "/" + rel));
    CHECK(n.read(rel) == text);
    struct stat st {};
    REQUIRE(::stat((n.root + "/victim/" + fs::path(rel).filename().string()).c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0644);  // the link's target kept its own mode
  }
}

TEST_CASE("installer: a symlink in place of the conf dir, bin dir or run dir is refused",
          "[installer][security]") {
  Node n;
  n.write("net.d/10-bridge.conflist", kBridge);
  fs::create_directories(n.root + "/elsewhere");
  auto cfg = n.config();
  std::string which;
  SECTION("conf dir") {
    which = "net.d";
    fs::copy_file(n.root + "/net.d/10-bridge.conflist", n.root + "/elsewhere/10-bridge.conflist");
    cfg.cni_net_dir = n.root + "/net.d-link";
  }
  SECTION("bin dir") {
    which = "bin";
    cfg.bin_target_dirs = {n.root + "/bin-link"};
  }
  SECTION("run dir") {
    which = "run";
    cfg.run_dir = n.root + "/run-link";
  }
  const std::string link = n.root + "/" + which + "-link";
  fs::create_symlink(n.root + "/elsewhere", link);
  const auto before = read_file(n.root + "/elsewhere/10-bridge.conflist");
  Installer inst(cfg);
  auto r = inst.install_once();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(),
             Catch::Contains(link + " is a symbolic link") && Catch::Contains("refused"));
  CHECK_FALSE(inst.ready());
  // Nothing of ours went through the link.
  for (const auto& e : fs::directory_iterator(n.root + "/elsewhere")) {
    INFO(e.path());
    CHECK(e.path().filename() == "10-bridge.conflist");
  }
  CHECK(read_file(n.root + "/elsewhere/10-bridge.conflist") == before);
}

TEST_CASE("the run dir is refused when a symlink stands in its place; one of ours is made 0750",
          "[installer][security]") {
  TempDir dir("amb-rundir-");
  fs::create_directories(dir.path() + "/real");
  ::chmod((dir.path() + "/real").c_str(), 0777);
  fs::create_symlink(dir.path() + "/real", dir.path() + "/run");
  auto r = prepare_run_dir(dir.path() + "/run");
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(),
             Catch::Contains("run dir " + dir.path() + "/run is a symbolic link"));
  struct stat st {};
  REQUIRE(::stat((dir.path() + "/real").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0777);  // the link's target was not tightened through it
  AMBIENT_REQUIRE_OK(prepare_run_dir(dir.path() + "/real"));
  REQUIRE(::stat((dir.path() + "/real").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0750);
  AMBIENT_REQUIRE_OK(prepare_run_dir(dir.path() + "/new/run"));
  REQUIRE(::stat((dir.path() + "/new/run").c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
}
