// What a CNI request may make the agent open (docs/node-agent.md#netns-paths),
// with real namespaces and bind mounts: a runtime's netns file is accepted,
// a netns bind-mounted anywhere else, another namespace type or a plain file
// bind-mounted into the netns directory, and the node's netns under another
// name are refused, on ADD and on the clean-up a DEL does.
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "agent/agent.h"
#include "support/files.h"
#include "support/null_host.h"
#include "support/random.h"
#include "support/require_ok.h"
#include "support/temp_dir.h"
#include "support/test_netns.h"
#include "zds/zds_server.h"

using namespace ambient;
using namespace ambient::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// Counts what the agent asks of the backend; nothing reaches the kernel.
class CountingBackend : public redirect::RedirectBackend {
 public:
  std::string_view name() const override { return "counting"; }
  Result<> install(const netns::Netns&, const redirect::PodRedirectConfig&,
                   const std::function<void()>&) override {
    ++installs;
    return {};
  }
  Result<redirect::VerifyReport> verify(const netns::Netns&,
                                        const redirect::PodRedirectConfig&) const override {
    return redirect::VerifyReport{};
  }
  Result<> remove(const netns::Netns& ns, const redirect::PodRedirectConfig&) override {
    ++removes;
    removed_ino = ns.inode();
    return {};
  }
  std::atomic<int> installs{0}, removes{0};
  std::atomic<ino_t> removed_ino{0};
};

// `source` bind-mounted on a new file `target`, undone when the test ends.
class BindMount {
 public:
  BindMount(const std::string& source, std::string target) : target_(std::move(target)) {
    write_file(target_, "");
    INFO("bind-mount " << source << " on " << target_ << ": " << std::strerror(errno));
    REQUIRE(::mount(source.c_str(), target_.c_str(), nullptr, MS_BIND, nullptr) == 0);
    mounted_ = true;
  }
  ~BindMount() {
    if (mounted_) ::umount2(target_.c_str(), MNT_DETACH);
    std::error_code ec;
    fs::remove(target_, ec);
  }
  BindMount(const BindMount&) = delete;
  BindMount& operator=(const BindMount&) = delete;
  const std::string& path() const { return target_; }

 private:
  std::string target_;
  bool mounted_ = false;
};

// An agent in this process with no ztunnel: the tests are about what it
// refuses before ztunnel would be asked.
struct Node {
  TempDir dir{"amb-reqns-"};
  agent::Config cfg;
  CountingBackend backend;
  NullHost host;
  agent::PodCache pods;
  agent::StandalonePolicy policy{{"*"}, {}};
  std::unique_ptr<zds::ZdsServer> zds;
  std::unique_ptr<agent::Agent> agent;

  explicit Node(const std::string& node_netns = "") {
    cfg.host_netns = node_netns;
    auto srv = zds::ZdsServer::start({.socket_path = dir.path() + "/z.sock",
                                      .snapshot = [] { return std::vector<zds::Workload>{}; }});
    REQUIRE(srv);
    zds = std::move(*srv);
    agent = std::make_unique<agent::Agent>(agent::AgentDeps{.config = cfg,
                                                            .backend = backend,
                                                            .host = host,
                                                            .zds = *zds,
                                                            .pods = pods,
                                                            .policy = policy});
  }
};

cni::CniEvent event_for(const std::string& netns) {
  return {.netns = netns,
          .pod_name = "web",
          .pod_namespace = "demo",
          .pod_uid = "uid-web",
          .container_id = "c1"};
}

}  // namespace

TEST_CASE("a pod netns bind-mounted outside the runtimes' directories is refused on ADD and DEL",
          "[netns][security]") {
  TestNetns pod("amb-reqns-");
  Node n;
  BindMount elsewhere(pod.path(), n.dir.path() + "/not-a-runtime-dir");
  auto r = n.agent->cmd_add(event_for(elsewhere.path()));
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("not a path a container runtime gives"));
  CHECK(n.backend.installs == 0);
  // A DEL for a pod the agent never enrolled cleans only a runtime's netns.
  AMBIENT_REQUIRE_OK(n.agent->cmd_del(event_for(elsewhere.path())));
  CHECK(n.backend.removes == 0);
  AMBIENT_REQUIRE_OK(n.agent->cmd_del(event_for(pod.path())));
  CHECK(n.backend.removes == 1);
  CHECK(n.backend.removed_ino == pod.ns().inode());
}

TEST_CASE("another namespace type or a plain file bind-mounted into /var/run/netns is refused",
          "[netns][security]") {
  Node n;
  const std::string name = "amb-reqns-" + random_hex(6);
  SECTION("a UTS namespace") {
    BindMount m("/proc/self/ns/uts", "/var/run/netns/" + name);
    auto r = n.agent->cmd_add(event_for(m.path()));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().describe(), Catch::Contains("a namespace but not a network namespace"));
    AMBIENT_REQUIRE_OK(n.agent->cmd_del(event_for(m.path())));
  }
  SECTION("a plain file") {
    BindMount m("/etc/hostname", "/var/run/netns/" + name);
    auto r = n.agent->cmd_add(event_for(m.path()));
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().describe(), Catch::Contains("is not a network namespace"));
    AMBIENT_REQUIRE_OK(n.agent->cmd_del(event_for(m.path())));
  }
  CHECK(n.backend.installs == 0);
  CHECK(n.backend.removes == 0);
}

TEST_CASE("the node's netns bind-mounted under a pod's name is refused on ADD and DEL",
          "[netns][security]") {
  TestNetns node_ns("amb-reqns-node-");
  Node n(node_ns.path());
  BindMount alias(node_ns.path(), "/var/run/netns/amb-reqns-alias-" + random_hex(6));
  auto r = n.agent->cmd_add(event_for(alias.path()));
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().describe(), Catch::Contains("network namespace of the node"));
  AMBIENT_REQUIRE_OK(n.agent->cmd_del(event_for(alias.path())));
  CHECK(n.backend.installs == 0);
  CHECK(n.backend.removes == 0);
}

TEST_CASE("a process's netns named as /proc/<pid>/ns/net opens as that netns", "[netns]") {
  auto ns = netns::open_requested("", "/proc/" + std::to_string(::getpid()) + "/ns/net");
  AMBIENT_REQUIRE_OK(ns);
  auto own = netns::Netns::open("/proc/self/ns/net");
  AMBIENT_REQUIRE_OK(own);
  CHECK(ns->inode() == own->inode());
  CHECK(ns->device() == own->device());
}
