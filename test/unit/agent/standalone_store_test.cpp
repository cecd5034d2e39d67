// Standalone mode's enrolled pods on disk (docs/node-agent.md#standalone-mode):
// the file's format, its atomic replacement, what a damaged or foreign file
// does, and the restart that re-adopts the pods it lists.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <future>

#include "agent/agent.h"
#include "agent/standalone_store.h"
#include "support/fake_redirect.h"
#include "support/files.h"
#include "support/null_host.h"
#include "support/require_ok.h"
#include "support/temp_dir.h"
#include "support/zds_peer.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace ambient::test;
namespace fs = std::filesystem;

namespace {

agent::StoredPod sample_pod(const std::string& uid, const std::string& netns_path = "/x") {
  agent::StoredPod p;
  p.pod.uid = uid;
  p.pod.info = {.name = "web-" + uid, .ns = "demo", .service_account = "default"};
  p.pod.ips = {*IpAddress::parse("10.0.0.7"), *IpAddress::parse("fd00::7")};
  p.pod.annotations = {{"ambient.istio.io/dns-capture", "false"}};
  p.pod.container_id = "sandbox-" + uid;
  p.netns_path = netns_path;
  p.netns_dev = 4;
  p.netns_ino = 4026532000;
  return p;
}

void check_same(const agent::StoredPod& a, const agent::StoredPod& b) {
  CHECK(a.pod.uid == b.pod.uid);
  CHECK(a.pod.info.name == b.pod.info.name);
  CHECK(a.pod.info.ns == b.pod.info.ns);
  CHECK(a.pod.info.service_account == b.pod.info.service_account);
  CHECK(a.pod.ips == b.pod.ips);
  CHECK(a.pod.annotations == b.pod.annotations);
  CHECK(a.pod.container_id == b.pod.container_id);
  CHECK(a.netns_path == b.netns_path);
  CHECK(a.netns_dev == b.netns_dev);
  CHECK(a.netns_ino == b.netns_ino);
}

// A run dir with this boot's ID in a file of its own.
struct RunDir {
  TempDir dir{"amb-store-test-"};
  std::string boot = dir.path() + "/boot_id";
  std::string file = dir.path() + "/" + std::string(agent::kStandaloneStoreFile);
  explicit RunDir(const std::string& boot_id = "boot-a") { write_file(boot, boot_id + "\n"); }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir.path())) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }
};

}  // namespace

TEST_CASE("standalone store: the file keeps every field of a pod", "[standalone-store]") {
  agent::StoreContents in{.boot_id = "boot-a", .pods = {sample_pod("u1"), sample_pod("u2")}};
  in.pods[1].pod.annotations.clear();
  in.pods[1].pod.container_id.clear();
  in.pods[1].pod.ips.clear();
  const std::string text = agent::encode_store(in);
  CHECK(text.rfind(R"({"version":1,"boot_id":"boot-a","pods":[{"uid":"u1",)", 0) == 0);
  auto out = agent::decode_store(text);
  AMBIENT_REQUIRE_OK(out);
  CHECK(out->boot_id == "boot-a");
  REQUIRE(out->pods.size() == 2);
  check_same(out->pods[0], in.pods[0]);
  check_same(out->pods[1], in.pods[1]);
  CHECK(agent::encode_store(*out) == text);
}

TEST_CASE("standalone store: anything but a whole document of version 1 is refused",
          "[standalone-store]") {
  const std::string good = agent::encode_store({.boot_id = "b", .pods = {sample_pod("u1")}});
  auto bad =
      GENERATE_COPY(as<std::string>{}, "", "{}", "[]", R"({"version":2,"boot_id":"b","pods":[]})",
                    R"({"version":"1","boot_id":"b","pods":[]})",
                    R"({"version":1,"boot_id":"b","pods":{}})", R"({"version":1,"boot_id":"b"})",
                    R"({"version":1,"boot_id":"b","pods":[{"uid":"u1","name":"n"}]})",
                    good.substr(0, good.size() / 2), good + "x");
  INFO(bad);
  CHECK_FALSE(agent::decode_store(bad));
}

TEST_CASE("standalone store: every change replaces the file whole, and the next run reads it",
          "[standalone-store]") {
  RunDir run;
  {
    agent::StandaloneStore store(run.file, run.boot);
    CHECK(store.load().empty());  // no file yet
    store.put(sample_pod("u1"));
    store.put(sample_pod("u2"));
    // A reader holding the file before the next change keeps a whole
    // document: the change is a new file renamed over it, never an edit.
    UniqueFd before(::open(run.file.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(before.valid());
    const auto id_before = file_id(run.file);
    store.erase("u1");
    const auto id_after = file_id(run.file);
    CHECK(id_after != id_before);
    std::string old_text(1 << 16, '\0');
    old_text.resize(static_cast<size_t>(::read(before.get(), old_text.data(), old_text.size())));
    auto old_doc = agent::decode_store(old_text);
    AMBIENT_REQUIRE_OK(old_doc);
    CHECK(old_doc->pods.size() == 2);
    store.erase("not-stored");  // nothing to forget: no write
    CHECK(file_id(run.file) == id_after);
    CHECK(store.write_failures() == 0);
  }
  struct stat st {};
  REQUIRE(::stat(run.file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Only the file itself: no temp file is left behind.
  CHECK(run.names() ==
        std::vector<std::string>{"boot_id", std::string(agent::kStandaloneStoreFile)});
  agent::StandaloneStore later(run.file, run.boot);
  auto pods = later.load();
  REQUIRE(pods.size() == 1);
  check_same(pods[0], sample_pod("u2"));
}

// The store keeps each pod's entry encoded and joins them on each write:
// the file must be what encoding the whole set at once gives.
TEST_CASE("standalone store: the file written is the whole set encoded at once",
          "[standalone-store]") {
  RunDir run;
  agent::StandaloneStore store(run.file, run.boot);
  store.reset({});
  CHECK(read_file(run.file) == agent::encode_store({.boot_id = "boot-a"}));
  agent::StoredPod odd = sample_pod("u3");
  odd.pod.annotations["note"] = "quote \" backslash \\ newline \n bad utf-8 \xff";
  store.put(sample_pod("u2"));
  store.put(odd);
  store.put(sample_pod("u1"));
  store.erase("u2");
  const std::string text = read_file(run.file);
  CHECK(text == agent::encode_store({.boot_id = "boot-a", .pods = {sample_pod("u1"), odd}}));
  auto back = agent::decode_store(text);
  AMBIENT_REQUIRE_OK(back);
  REQUIRE(back->pods.size() == 2);
  check_same(back->pods[0], sample_pod("u1"));
  CHECK(back->pods[1].pod.annotations.at("note").starts_with("quote \" backslash \\ newline"));
}

TEST_CASE("standalone store: a write that fails is counted, and the next one carries it",
          "[standalone-store]") {
  RunDir run;
  const std::string missing_dir = run.dir.path() + "/not-yet";
  const std::string file = missing_dir + "/" + std::string(agent::kStandaloneStoreFile);
  agent::StandaloneStore store(file, run.boot);
  store.put(sample_pod("u1"));  // does not throw, does not fail the caller
  CHECK(store.write_failures() == 1);
  fs::create_directory(missing_dir);
  store.put(sample_pod("u2"));
  CHECK(store.write_failures() == 1);
  agent::StandaloneStore later(file, run.boot);
  CHECK(later.load().size() == 2);  // the pod whose write failed is in the later one
}

// A full run dir frees up with no enrollment or removal to follow: the
// agent's periodic retry (flush) saves the pods all the same, so a later
// restart drains none of them.
TEST_CASE("standalone store: a failed write is saved by the next flush, with no change needed",
          "[standalone-store]") {
  RunDir run;
  const std::string missing_dir = run.dir.path() + "/not-yet";
  const std::string file = missing_dir + "/" + std::string(agent::kStandaloneStoreFile);
  agent::StandaloneStore store(file, run.boot);
  store.flush();  // nothing unsaved: no write, so no failure
  CHECK(store.write_failures() == 0);
  store.put(sample_pod("u1"));
  CHECK(store.write_failures() == 1);
  store.flush();  // still no room
  CHECK(store.write_failures() == 2);
  CHECK_FALSE(fs::exists(file));
  fs::create_directory(missing_dir);
  store.flush();
  CHECK(store.write_failures() == 2);
  agent::StandaloneStore later(file, run.boot);
  auto pods = later.load();
  REQUIRE(pods.size() == 1);
  CHECK(pods[0].pod.uid == "u1");
  fs::remove(file);
  store.flush();  // saved already: not written again
  CHECK_FALSE(fs::exists(file));
}

TEST_CASE("standalone store: a damaged file or one of another version is moved aside",
          "[standalone-store]") {
  RunDir run;
  const std::string text =
      GENERATE(as<std::string>{}, "{\"version\":1,\"boot_id\":\"boot-a\",\"pods\":[{\"ui",
               R"({"version":2,"boot_id":"boot-a","pods":[]})", "");
  INFO(text);
  write_file(run.file, text);
  agent::StandaloneStore store(run.file, run.boot);
  CHECK(store.load().empty());
  CHECK_FALSE(fs::exists(run.file));
  CHECK(read_file(run.file + ".bad") == text);  // kept for whoever looks into it
  // The agent goes on: the next enrollment writes a fresh file.
  store.put(sample_pod("u1"));
  CHECK(store.write_failures() == 0);
  agent::StandaloneStore later(run.file, run.boot);
  CHECK(later.load().size() == 1);
}

TEST_CASE("standalone store: a file from before a reboot restores nothing", "[standalone-store]") {
  RunDir run("boot-b");
  write_file(run.file, agent::encode_store({.boot_id = "boot-a", .pods = {sample_pod("u1")}}));
  agent::StandaloneStore store(run.file, run.boot);
  CHECK(store.load().empty());
  CHECK(fs::exists(run.file));  // not damaged: simply stale
}

TEST_CASE("standalone store: temp files of an interrupted write are cleared at start",
          "[standalone-store]") {
  RunDir run;
  write_file(run.file, agent::encode_store({.boot_id = "boot-a", .pods = {sample_pod("u1")}}));
  write_file(run.file + ".tmp.12345", "{\"version\":1,");
  agent::StandaloneStore store(run.file, run.boot);
  CHECK(store.load().size() == 1);
  CHECK_FALSE(fs::exists(run.file + ".tmp.12345"));
}

TEST_CASE("standalone store: a stored netns is the same only by path and identity",
          "[standalone-store]") {
  RunDir run;
  const auto [dev, ino] = file_id("/proc/self/ns/net");
  agent::StoredPod p = sample_pod("u1", "/proc/self/ns/net");
  p.netns_dev = dev;
  p.netns_ino = ino;
  auto same = agent::reopen_netns(p);
  CHECK(same.fate == agent::NetnsFate::Same);
  REQUIRE(same.ns);
  CHECK(same.ns->inode() == ino);

  p.netns_ino = ino + 1;  // the path was reused by another netns
  auto reused = agent::reopen_netns(p);
  CHECK(reused.fate == agent::NetnsFate::Gone);
  CHECK_FALSE(reused.ns);
  CHECK_THAT(reused.why, Catch::Contains("another netns"));

  p.netns_path = run.dir.path() + "/deleted";
  CHECK(agent::reopen_netns(p).fate == agent::NetnsFate::Gone);

  p.netns_path = run.boot;  // there, but no netns: cannot tell
  auto unreachable = agent::reopen_netns(p);
  CHECK(unreachable.fate == agent::NetnsFate::Unreachable);
  CHECK_FALSE(unreachable.ns);
}

namespace {

// An agent with a store in a run dir, and a ZDS server nobody is connected
// to yet (as at start-up).
struct StandaloneNode {
  RunDir run;
  agent::Config cfg;
  CountingBackend backend;
  NullHost host;
  agent::PodCache pods;
  agent::StandalonePolicy policy{{"*"}, {}};
  agent::StandaloneStore store{run.file, run.boot};
  std::unique_ptr<zds::ZdsServer> zds;
  std::unique_ptr<agent::Agent> agent;
  StandaloneNode() {
    cfg.dns_capture = true;
    auto srv = zds::ZdsServer::start({.socket_path = run.dir.path() + "/z.sock",
                                      .io_timeout = 2s,
                                      .snapshot = [this] { return pods.workloads(); },
                                      .accept_immediately = false});
    REQUIRE(srv);
    zds = std::move(*srv);
    agent = std::make_unique<agent::Agent>(agent::AgentDeps{.config = cfg,
                                                            .backend = backend,
                                                            .host = host,
                                                            .zds = *zds,
                                                            .pods = pods,
                                                            .policy = policy,
                                                            .store = &store});
  }
};

}  // namespace

TEST_CASE("standalone restart: pods are re-adopted, kept without a netns, or dropped",
          "[standalone-store]") {
  StandaloneNode n;
  const auto [dev, ino] = file_id("/proc/self/ns/net");
  agent::StoredPod same = sample_pod("same", "/proc/self/ns/net");
  same.netns_dev = dev;
  same.netns_ino = ino;
  agent::StoredPod reused = same;
  reused.pod.uid = "reused";
  reused.netns_ino = ino + 1;
  agent::StoredPod unreachable = sample_pod("unreachable", n.run.boot);
  agent::StoredPod gone = sample_pod("gone", n.run.dir.path() + "/deleted");
  write_file(n.run.file,
             agent::encode_store({.boot_id = "boot-a", .pods = {same, reused, unreachable, gone}}));

  const bool reconcile = GENERATE(true, false);
  auto counts = agent::restore_enrollments(n.store, *n.agent, reconcile);
  CHECK(counts.adopted == 1);
  CHECK(counts.kept == 1);
  CHECK(counts.dropped == 2);
  // Rules are checked once per reopened netns, and only when asked to.
  CHECK(n.backend.installs == (reconcile ? 1 : 0));
  REQUIRE(n.pods.size() == 2);
  auto adopted = n.pods.get("same");
  REQUIRE(adopted);
  REQUIRE(adopted->workload.netns);
  CHECK(adopted->workload.netns->inode() == ino);
  CHECK(adopted->container_id == "sandbox-same");  // a later DEL is matched by it
  CHECK(adopted->ips == same.pod.ips);
  CHECK_FALSE(adopted->redirect.dns_capture);  // the pod's annotation still applies
  auto kept = n.pods.get("unreachable");
  REQUIRE(kept);
  CHECK_FALSE(kept->workload.netns);  // ztunnel's snapshot gets Keep
  // The file now lists the pods kept, so the dropped ones stay dropped.
  agent::StandaloneStore later(n.run.file, n.run.boot);
  auto stored = later.load();
  REQUIRE(stored.size() == 2);
  CHECK(stored[0].pod.uid == "same");
  CHECK(stored[1].pod.uid == "unreachable");
}

TEST_CASE("standalone restart: the agent's enrollments and removals are what the file holds",
          "[standalone-store]") {
  StandaloneNode n;
  CHECK(agent::restore_enrollments(n.store, *n.agent, true).adopted == 0);
  n.zds->start_accepting();
  UniqueFd peer = connect_past_empty_snapshot(*n.zds, n.run.dir.path() + "/z.sock");
  agent::PodIdentity pod = sample_pod("u1").pod;
  auto added = std::async(std::launch::async, [&] { return n.agent->add_pod(pod, own_netns()); });
  std::vector<UniqueFd> fds;
  REQUIRE(next(peer.get(), &fds).has_add());
  send_raw(peer.get(), ack());
  AMBIENT_REQUIRE_OK(added.get());
  {
    agent::StandaloneStore reader(n.run.file, n.run.boot);
    auto stored = reader.load();
    REQUIRE(stored.size() == 1);
    CHECK(stored[0].pod.uid == "u1");
    CHECK(stored[0].netns_path == "/proc/self/ns/net");
    CHECK(stored[0].netns_ino == file_id("/proc/self/ns/net").second);
    CHECK(stored[0].pod.annotations == pod.annotations);
  }
  auto removed = std::async(std::launch::async, [&] { return n.agent->remove_pod("u1", false); });
  REQUIRE(next(peer.get()).has_del());
  send_raw(peer.get(), ack());
  AMBIENT_REQUIRE_OK(removed.get());
  agent::StandaloneStore reader(n.run.file, n.run.boot);
  CHECK(reader.load().empty());
}
