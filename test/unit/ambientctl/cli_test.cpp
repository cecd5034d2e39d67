// ambientctl against a scripted agent: the table, JSON and YAML output
// against golden files (UPDATE_GOLDEN=1 rewrites them), exit codes, and
// the messages for bad input and a missing agent.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "admin/server.h"
#include "lib/unique_fd.h"
#include "src/cli.h"
#include "src/output.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "unit/admin/fake_source.h"

using namespace ambient;
using namespace ambient::test;
namespace fs = std::filesystem;

namespace {

// test/golden/ambientctl/<name>; UPDATE_GOLDEN=1 writes `actual` there.
void check_golden(const std::string& name, const std::string& actual) {
  const fs::path path = fs::path(__FILE__).parent_path() / "../../golden/ambientctl" / name;
  if (const char* u = std::getenv("UPDATE_GOLDEN"); u && std::string(u) == "1") {
    std::ofstream(path) << actual;
  }
  auto want = try_read_file(path.string());
  INFO("golden file " << path.string() << " (UPDATE_GOLDEN=1 rewrites it)");
  REQUIRE(want);
  CHECK(actual == *want);
}

struct Agent {
  TempDir dir;
  FakeSource src;
  std::unique_ptr<admin::AdminServer> server;
  std::string socket;

  Agent() : socket(dir.path() + "/admin.sock") {
    populate(src);
    auto s = admin::AdminServer::start({.socket_path = socket}, src);
    REQUIRE(s);
    server = std::move(*s);
  }
};

struct Ran {
  int code;
  std::string out, err;
};

Ran run_ctl(const std::string& socket, const std::vector<std::string>& args) {
  std::ostringstream out, err;
  ambient::ctl::Io io{out, err, socket};
  const int code = ambient::ctl::run(args, io);
  return {code, out.str(), err.str()};
}

}  // namespace

TEST_CASE("ambientctl status, pods and pod print golden tables", "[ambientctl]") {
  Agent a;
  auto status = run_ctl(a.socket, {"status"});
  CHECK(status.code == 0);
  check_golden("status.txt", status.out);
  auto pods = run_ctl(a.socket, {"pods"});
  CHECK(pods.code == 0);
  check_golden("pods.txt", pods.out);
  auto pod = run_ctl(a.socket, {"pod", "ambient-demo/web"});
  CHECK(pod.code == 0);
  check_golden("pod.txt", pod.out);
  auto failed = run_ctl(a.socket, {"pod", "other/db"});
  CHECK(failed.code == 0);
  check_golden("pod-failed.txt", failed.out);
  auto ns = run_ctl(a.socket, {"pods", "-n", "other"});
  CHECK(ns.code == 0);
  CHECK(ns.out.find("ambient-demo") == std::string::npos);
  CHECK(ns.out.find("db") != std::string::npos);
}

TEST_CASE("ambientctl -o json and -o yaml carry every field under its proto name", "[ambientctl]") {
  Agent a;
  auto pods = run_ctl(a.socket, {"pods", "-o", "json"});
  CHECK(pods.code == 0);
  check_golden("pods.json", pods.out);
  auto j = nlohmann::json::parse(pods.out);
  REQUIRE(j["pods"].size() == 3);
  // Defaults are printed too, so every pod has the same keys.
  CHECK(j["pods"][2]["netns"] == "");
  CHECK(j["pods"][1]["netns_inode"] == 4026532001u);
  auto status = run_ctl(a.socket, {"status", "-ojson"});
  check_golden("status.json", status.out);
  auto yaml = run_ctl(a.socket, {"--output=yaml", "pod", "ambient-demo/web"});
  CHECK(yaml.code == 0);
  check_golden("pod.yaml", yaml.out);
}

TEST_CASE("ambientctl verify exits 0 clean, 1 on drift, 2 when a pod cannot be checked",
          "[ambientctl]") {
  Agent a;
  auto clean = run_ctl(a.socket, {"verify", "ambient-demo/web"});
  CHECK(clean.code == 0);
  CHECK(clean.out == "ambient-demo/web: clean\n1 pod: 1 clean, 0 drifted, 0 not checked\n");

  a.src.problems["uid-web"] = {"ip rule fwmark 0x111/0xfff lookup 100 missing",
                               "ztunnel listener tcp/15006 missing in the pod's netns"};
  auto drift = run_ctl(a.socket, {"verify", "ambient-demo/web"});
  CHECK(drift.code == 1);
  check_golden("verify-drift.txt", drift.out);

  a.src.verify_errors["uid-api"] = "netns unknown";
  auto all = run_ctl(a.socket, {"verify", "--all"});
  CHECK(all.code == 2);
  CHECK_THAT(all.out, Catch::Contains("ambient-demo/api: ERROR netns unknown"));
  CHECK(a.src.verified().size() == 4);  // web, web, api and web again

  auto json = run_ctl(a.socket, {"verify", "ambient-demo/web", "-o", "json"});
  CHECK(json.code == 1);
  CHECK(nlohmann::json::parse(json.out)["pods"][0]["problems"].size() == 2);
}

TEST_CASE("ambientctl refuses bad input with exit 2 and a clear message", "[ambientctl]") {
  Agent a;
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"pod", "web"}, "\"web\" is not NAMESPACE/NAME"},
      {{"pod"}, "pod needs NAMESPACE/NAME"},
      {{"pod", "a/b/c"}, "is not NAMESPACE/NAME"},
      {{"frobnicate"}, "unknown command \"frobnicate\""},
      {{"pods", "--bogus"}, "unknown flag --bogus"},
      {{"pods", "-o", "xml"}, "unknown output format \"xml\""},
      {{"verify", "a/b", "--all"}, "not both"},
      {{"status", "-n", "x"}, "-n is for `pods` only"},
      {{}, "no command given"},
      {{"pod", "ambient-demo/nope"}, "pod ambient-demo/nope is not known to the agent"},
      {{"pod", "Bad_NS!/x"}, "a pod is named NAMESPACE/NAME (each a Kubernetes name)"},
      {{"trace", "ambient-demo/web"}, "trace needs --to IP:PORT"},
      {{"trace", "--to", "10.0.0.1:80"}, "trace needs NAMESPACE/NAME"},
      {{"trace", "ambient-demo/web", "--inbound"}, "trace --inbound needs --port PORT"},
      {{"trace", "ambient-demo/web", "--inbound", "--port", "80", "--udp"}, "not --inbound"},
      {{"trace", "ambient-demo/web", "--to", "10.0.0.1:80", "--port", "80"},
       "--from and --port are for --inbound traces"},
      {{"trace", "ambient-demo/web", "--inbound", "--port", "70000"}, "--port needs a port"},
      {{"trace", "ambient-demo/web", "--to", "1.2.3.4:5", "--mark", "x"}, "--mark needs a number"},
      {{"pods", "--udp"}, "are for `trace` only"},
      {{"trace", "other/nope", "--to", "10.0.0.1:80"}, "no such pod"},
  };
  for (const auto& c : cases) {
    auto r = run_ctl(a.socket, c.args);
    INFO("ambientctl " << (c.args.empty() ? "" : c.args[0]) << " ...: " << r.err);
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(c.message));
  }
}

TEST_CASE("ambientctl trace sends the probe's request and prints the answer", "[ambientctl]") {
  Agent a;
  auto out =
      run_ctl(a.socket, {"trace", "ambient-demo/web", "--to", "10.244.0.9:8080", "--mark", "1337"});
  INFO(out.err);
  CHECK(out.code == 0);
  check_golden("trace.txt", out.out);
  CHECK(a.src.traced_uid == "uid-web");
  CHECK(a.src.traced.to() == "10.244.0.9:8080");
  CHECK(a.src.traced.mark() == 1337);
  CHECK_FALSE(a.src.traced.inbound());

  auto json =
      run_ctl(a.socket, {"trace", "ambient-demo/web", "--to", "10.244.0.9:8080", "-o", "json"});
  CHECK(json.code == 0);
  check_golden("trace.json", json.out);

  auto in = run_ctl(a.socket, {"trace", "ambient-demo/web", "--inbound", "--from", "10.244.0.1",
                               "--port", "8080"});
  CHECK(in.code == 0);
  CHECK(a.src.traced.inbound());
  CHECK(a.src.traced.port() == 8080);
  CHECK(a.src.traced.from() == "10.244.0.1");

  // A pod the agent does not know: traced by its netns.
  auto by_netns = run_ctl(a.socket, {"trace", "plain/c", "--to", "10.0.0.1:53", "--udp", "--netns",
                                     "/var/run/netns/cni-c"});
  CHECK(by_netns.code == 0);
  CHECK(a.src.traced_uid.empty());
  CHECK(a.src.traced.netns() == "/var/run/netns/cni-c");
  CHECK(a.src.traced.udp());
}

TEST_CASE("ambientctl says so, with exit 3, when no agent is running", "[ambientctl]") {
  TempDir dir;
  auto r = run_ctl(dir.path() + "/admin.sock", {"status"});
  CHECK(r.code == 3);
  CHECK_THAT(r.err, Catch::Contains("no agent is serving"));
  CHECK_THAT(r.err, Catch::Contains("is ambient-agent running"));
  // A stale socket file, nobody listening behind it.
  {
    Agent gone;
    std::string stale = gone.socket;
    gone.server.reset();
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, stale.c_str());
    // Bound, never listening: what an agent that died leaves behind.
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    fd.reset();
    auto refused = run_ctl(stale, {"pods"});
    CHECK(refused.code == 3);
    CHECK_THAT(refused.err, Catch::Contains("connection refused"));
  }
}

TEST_CASE("ambientctl --help lists every command, flag and exit code", "[ambientctl]") {
  auto r = run_ctl("/nonexistent", {"--help"});
  CHECK(r.code == 0);
  for (const char* s :
       {"status", "pods [-n NAMESPACE]", "pod NAMESPACE/NAME", "verify", "inspect", "events",
        "trace NAMESPACE/NAME --to IP:PORT", "--inbound", "--from IP", "--port PORT", "--mark N",
        "--udp", "--output", "--socket", "AMBIENTCTL_SOCKET", "--timeout", "Exit codes", "  3  ",
        "kubectl exec -n istio-system ds/istio-cni-node -- ambientctl pods"}) {
    CHECK_THAT(r.out, Catch::Contains(s));
  }
  for (const char* cmd :
       {"status", "pods", "pod", "verify", "inspect", "events", "trace", "version"}) {
    auto h = run_ctl("/nonexistent", {cmd, "--help"});
    INFO(cmd);
    CHECK(h.code == 0);
    CHECK_THAT(h.out, Catch::StartsWith(std::string("Usage: ambientctl ") + cmd));
    CHECK_THAT(h.out, Catch::Contains("Exit codes"));
  }
}

TEST_CASE("to_yaml writes nested messages and lists in block style", "[ambientctl]") {
  const auto j = nlohmann::json::parse(
      R"({"a":1,"b":"x: y","c":[],"d":[{"e":true,"f":["g"]}],"h":{},"i":{"j":null}})");
  CHECK(ambient::ctl::to_yaml(j) ==
        "a: 1\n"
        "b: \"x: y\"\n"
        "c: []\n"
        "d:\n"
        "- e: true\n"
        "  f:\n"
        "  - \"g\"\n"
        "h: {}\n"
        "i:\n"
        "  j: null\n");
}
