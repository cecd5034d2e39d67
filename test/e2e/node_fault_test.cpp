// docs/reliability.md#faults, the node: what the node under the agent can
// do to it (its CNI config directory replaced, its run dir full, its fd
// limit reached). Each ends in a clear error or a retry, never a crash, a
// half-written file, a half-redirected pod or a lost enrollment.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "lib/unique_fd.h"
#include "process/process.h"
#include "support/backends.h"
#include "support/churn.h"
#include "support/files.h"
#include "support/sim_node.h"
#include "support/sockets.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

namespace fs = std::filesystem;

bool log_has(SimNode& node, const std::string& text, std::chrono::milliseconds within = 10s) {
  return eventually([&] { return node.agent_log().find(text) != std::string::npos; }, within);
}

// Writes zeros to `path` until the filesystem is full.
void fill(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  const std::string block(4096, '\0');
  while (::write(fd.get(), block.data(), block.size()) > 0) {
  }
  REQUIRE(errno == ENOSPC);
}

// CNI through the chain the agent's installer made (the runtime's view of
// the node), not the harness's own conflist.
AddResult installed_chain(SimNode& node, const std::string& op, const Pod& p) {
  AddResult res;
  auto r = run_command(
      {.argv = {"ip", "netns", "exec", node.node_netns(), bin_path("cni-driver"), op, "--conflist",
                node.conflist_path(), "--netns", p.netns_path, "--container-id", p.container_id,
                "--bin-dir", node.dir() + "/host/bin:/usr/lib/cni", "--cache-dir",
                node.dir() + "/cache", "--args",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + p.ns + ";K8S_POD_NAME=" + p.name +
                    ";K8S_POD_UID=" + p.uid},
       .timeout = 60s});
  REQUIRE(r);
  res.ok = r->exit_code == 0;
  res.stderr_text = r->err;
  if (!r->out.empty()) res.output = json::parse(r->out, nullptr, false);
  return res;
}

}  // namespace

// A CNI operator's daemon (or a person) removing /etc/cni/net.d and making
// it again: the installer has lost its inotify watch with the directory,
// notices by its periodic re-check, and writes our entry into the primary
// config once the primary CNI has put that back.
TEST_CASE(
    "node: the CNI config dir deleted and made again gets our entry back; pods add through it",
    "[e2e][fault][installer]") {
  NodeOptions opts;
  opts.installer = true;
  SimNode node(opts);
  const std::string dir = node.dir() + "/host/net.d";
  const std::string conf = node.conflist_path();
  auto ours = [&] { return read_file(conf).find("\"istio-cni\"") != std::string::npos; };
  REQUIRE(eventually(ours, 5s));
  json primary = json::parse(read_file(conf));
  json plugins = json::array();
  for (const auto& p : primary["plugins"]) {
    if (p.value("type", "") != "istio-cni") plugins.push_back(p);
  }
  primary["plugins"] = plugins;

  fs::remove_all(dir);
  // Not ready while there is nothing to insert into, and says why.
  CHECK(eventually([&] { return !node.node_http_get(8000, "/readyz").starts_with("HTTP/1.1 200"); },
                   5s));
  CHECK(log_has(node, dir));
  CHECK(node.agent_running());

  fs::create_directories(dir);
  write_file(conf, primary.dump(2));  // the primary CNI writes its config again
  REQUIRE(eventually(ours, 5s));
  CHECK(eventually([&] { return node.node_http_get(8000, "/readyz").starts_with("HTTP/1.1 200"); },
                   5s));

  // Both pods through the installed chain: its host-local keeps its own
  // address range, which the harness's conflist would hand out again.
  auto add = [&](const std::string& name) {
    Pod p = node.prepare_pod(name, "ambient-demo");
    AddResult r = installed_chain(node, "add", p);
    INFO(r.output.dump() << "\n" << r.stderr_text << "\n" << node.agent_log());
    REQUIRE(r.ok);
    node.pod_started(p, r);
    return p;
  };
  Pod a = add("a");
  Pod b = add("b");
  CHECK(node.pod_has_our_rules(a));
  CHECK(eventually([&] { return node.ztunnel_has(a); }));
  CHECK_THAT(in_pod_tcp(a, b.ip, 8080), Catch::Contains("port=15001"));
  for (const Pod* p : {&a, &b}) {
    REQUIRE(installed_chain(node, "del", *p).ok);
    CHECK(eventually([&] { return !node.ztunnel_has(*p); }));
    node.forget_pod(*p);
  }
}

// The run dir (/var/run/istio-cni, a tmpfs on a real node) full: sockets
// still bind (they need an inode, no blocks), enrollments go on (standalone
// mode's saved copy of them is what fails, docs/node-agent.md#standalone-mode),
// the saved file stays the last complete one, and once there is room again
// the save is retried, so a restart after that loses no pod.
TEST_CASE("node: a full run dir fails no enrollment, half-writes nothing and loses no pod",
          "[e2e][fault][run-dir]") {
  NodeOptions opts;
  opts.run_dir_tmpfs = "256k";
  SimNode node(opts);
  const std::string run = node.dir() + "/run";
  const std::string store = run + "/standalone-pods.json";
  Pod a = node.must_add_pod("a", "ambient-demo");
  REQUIRE(read_file(store).find(a.uid) != std::string::npos);

  fill(run + "/filler");
  // An agent started on a full run dir comes up (start_agent fails the test
  // otherwise) and keeps the pod it had.
  node.stop_agent();
  node.start_agent();
  CHECK(node.ztunnel_has(a));

  Pod b;
  AddResult added = node.add_pod("b", "ambient-demo", &b);
  INFO(added.output.dump() << "\n" << added.stderr_text);
  REQUIRE(added.ok);
  CHECK(node.pod_has_our_rules(b));
  CHECK(eventually([&] { return node.ztunnel_has(b); }));
  CHECK(log_has(node, "No space left on device"));
  // What is on disk is the last complete set, and no temp file is left.
  const json saved = json::parse(read_file(store), nullptr, false);
  REQUIRE_FALSE(saved.is_discarded());
  CHECK(saved.dump().find(a.uid) != std::string::npos);
  for (const auto& e : fs::directory_iterator(run)) {
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  }

  fs::remove(run + "/filler");
  CHECK(eventually([&] { return read_file(store).find(b.uid) != std::string::npos; }, 10s));
  node.stop_agent();
  node.start_agent();
  node.wait_ztunnel_ready();
  const json workloads = node.ztunnel_state()["workloads"];
  INFO(workloads.dump());
  CHECK(workloads.contains(a.uid));
  CHECK(workloads.contains(b.uid));
  CHECK_THAT(read_file(node.dir() + "/ztunnel.log"),
             !Catch::Contains("draining proxy uid=" + b.uid));
}

// RLIMIT_NOFILE reached: each enrolled pod holds its netns open, so a low
// limit runs out after a few dozen pods. An ADD that cannot get an fd
// fails closed and says EMFILE ("Too many open files"), nothing of ours in
// its pod; once pods are deleted, ADDs work again.
TEST_CASE("node: at the fd limit ADDs fail closed naming EMFILE; freed fds serve again",
          "[e2e][fault][fds]") {
  NodeOptions opts;
  opts.backend = GENERATE(from_range(kBackends));
  INFO("backend " << opts.backend);
  opts.agent_nofile = 96;
  SimNode node(opts);
  std::vector<Pod> enrolled;
  Pod refused;
  AddResult failed;
  for (int i = 0; i < 96; ++i) {
    Pod p;
    AddResult r = node.add_pod("p" + std::to_string(i), "ambient-demo", &p);
    if (!r.ok) {
      refused = p;
      failed = r;
      break;
    }
    enrolled.push_back(p);
  }
  INFO(enrolled.size() << " pods enrolled before the first failure");
  REQUIRE_FALSE(failed.ok);
  REQUIRE(!enrolled.empty());
  const std::string error = failed.output.dump() + failed.stderr_text;
  INFO(error);
  CHECK_THAT(error, Catch::Contains("Too many open files"));
  CHECK_FALSE(node.pod_has_our_rules(refused));
  CHECK_FALSE(node.ztunnel_has(refused));
  CHECK(node.agent_running());

  for (size_t i = 0; i < 4; ++i) REQUIRE(node.del_pod(enrolled[i]).ok);
  Pod again = node.must_add_pod("again", "ambient-demo");
  CHECK(node.pod_has_our_rules(again));
  CHECK(eventually([&] { return node.ztunnel_has(again); }));
  CHECK_THAT(in_pod_tcp(again, enrolled.back().ip, 8080), Catch::Contains("port=15001"));
}

// Connections queued while the agent has no fd left: the CNI socket's and
// the admin socket's accept loops wait for fds instead of spinning on
// EMFILE (a connection that cannot be accepted stays queued, so the socket
// stays readable), say so once, and serve again once fds are freed.
TEST_CASE("node: connections past the fd limit make the agent wait rather than spin",
          "[e2e][fault][fds]") {
  NodeOptions opts;  // the default backend: nothing here is about redirection
  opts.agent_nofile = 64;
  SimNode node(opts);
  Pod first = node.must_add_pod("first", "ambient-demo");
  const std::vector<std::string> sockets = {node.agent_socket(), node.dir() + "/run/admin.sock"};
  std::vector<UniqueFd> held;
  for (int i = 0; i < 80; ++i) {
    for (const auto& path : sockets) {
      // Non-blocking: a full backlog answers EAGAIN rather than waiting.
      UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      const sockaddr_un a = unix_address(path);
      if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
        held.push_back(std::move(fd));
      } else {
        REQUIRE(errno == EAGAIN);
      }
    }
  }
  REQUIRE(log_has(node, "CNI event socket: cannot accept connections: Too many open files"));
  REQUIRE(log_has(node, "admin socket: cannot accept connections: Too many open files"));
  const double cpu_before = agent_usage(node.agent_pid()).cpu_s;
  std::this_thread::sleep_for(2s);
  const double cpu = agent_usage(node.agent_pid()).cpu_s - cpu_before;
  INFO("agent CPU over 2 s at the fd limit: " << cpu << " s");
  CHECK(cpu < 0.3);  // an accept loop spinning on EMFILE takes a whole core
  const std::string log = node.agent_log();
  for (const char* starved : {"CNI event socket: cannot accept", "admin socket: cannot accept"}) {
    INFO(starved);
    size_t n = 0;
    for (size_t at = log.find(starved); at != std::string::npos; at = log.find(starved, at + 1)) {
      ++n;
    }
    CHECK(n == 1);
  }

  held.clear();
  CHECK(log_has(node, "CNI event socket: accepting connections again"));
  CHECK(log_has(node, "admin socket: accepting connections again"));
  Pod after = node.must_add_pod("after", "ambient-demo");
  CHECK(eventually([&] { return node.ztunnel_has(after); }));
  CHECK(node.pod_has_our_rules(after));
}
