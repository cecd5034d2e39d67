// The plugin end to end in process: env, stdin and the agent are injected.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>

#include "cni_result.h"
#include "dispatcher.h"
#include "lib/cni_event.h"
#include "lib/json_fields.h"
#include "lib/version.h"
#include "netconf.h"

using namespace ambient;
using namespace ambient::cni;
using json::Json;

namespace {

class FakeAgent : public AgentClient {
 public:
  struct Call {
    std::string socket, target, body;
  };
  std::vector<Call> calls;
  Result<HttpReply> reply = HttpReply{200, ""};

  Result<HttpReply> post(const std::string& socket_path, std::string_view target,
                         const std::string& body, std::chrono::milliseconds) override {
    calls.push_back({socket_path, std::string(target), body});
    return reply;
  }
};

struct Run {
  int rc;
  std::string out, err;
  Json out_json() const { return Json::parse(out); }
};

std::map<std::string, std::string> add_env() {
  return {
      {"CNI_COMMAND", "ADD"},
      {"CNI_CONTAINERID", "c0ffee"},
      {"CNI_NETNS", "/var/run/netns/pod1"},
      {"CNI_IFNAME", "eth0"},
      {"CNI_PATH", "/opt/cni/bin"},
      {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1;K8S_POD_UID=u-1"}};
}

// The API server as the plugin's fallback sees it.
class FakeKube : public KubeApi {
 public:
  std::map<std::string, HttpReply> objects;  // path -> reply
  std::optional<Result<HttpReply>> every;    // when set, the answer to every GET
  std::vector<std::string> gets;
  int loads = 0;  // clients made from the kubeconfig
  Result<HttpReply> get(const std::string& path) override {
    gets.push_back(path);
    if (every) return *every;
    auto it = objects.find(path);
    if (it == objects.end()) {
      return HttpReply{404, R"({"kind":"Status","code":404,"message":"not found"})"};
    }
    return it->second;
  }
};

// What a test may add to an invocation besides env, stdin and the agent.
struct Extra {
  std::vector<std::string> args;                             // command line after argv[0]
  std::vector<std::chrono::milliseconds>* sleeps = nullptr;  // records the back-off
};

Run run(std::map<std::string, std::string> env, const std::string& in, FakeAgent& agent,
        FakeKube* kube = nullptr, Extra extra = {}) {
  std::string out, err;
  PluginIo io{.getenv = [&](const char* n) -> std::optional<std::string> {
                auto it = env.find(n);
                if (it == env.end()) return std::nullopt;
                return it->second;
              },
              .stdin_data = in,
              .args = extra.args,
              .out = [&](std::string_view s) { out += s; },
              .err = [&](std::string_view s) { err += s; },
              .netns_identity = {},
              .kube_api = [&](const std::string&) -> Result<std::unique_ptr<KubeApi>> {
                if (!kube) return make_error(Errc::NotFound, "no kubeconfig in this test");
                ++kube->loads;
                struct Borrowed : KubeApi {
                  FakeKube* k;
                  explicit Borrowed(FakeKube* f) : k(f) {}
                  Result<HttpReply> get(const std::string& p) override { return k->get(p); }
                };
                return std::unique_ptr<KubeApi>(new Borrowed(kube));
              },
              .sleep =
                  [&](std::chrono::milliseconds d) {
                    if (extra.sleeps) extra.sleeps->push_back(d);
                  }};
  int rc = run_plugin(io, agent);
  return {rc, out, err};
}

const char* kPrev100 =
    R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/var/run/netns/pod1"}],
  "ips":[{"interface":0,"address":"10.1.2.3/24","gateway":"10.1.2.1"},{"interface":0,"address":"fd00::3/64"}],
  "routes":[{"dst":"0.0.0.0/0","gw":"10.1.2.1"}],"dns":{"nameservers":["10.96.0.10"]}})";

std::string conf(const std::string& version, const std::string& extra = "",
                 const std::string& prev = kPrev100) {
  std::string s = "{";
  if (!version.empty()) s += R"("cniVersion":")" + version + R"(",)";
  s += R"("name":"k8s-pod-network","type":"istio-cni","ambient_enabled":true,)"
       R"("cni_agent_run_dir":"/run/test-agent","exclude_namespaces":["kube-system"],)"
       R"("pod_namespace":"istio-system")";
  if (!extra.empty()) s += "," + extra;
  if (!prev.empty()) s += R"(,"prevResult":)" + prev;
  return s + "}";
}

}  // namespace

TEST_CASE("VERSION prints the supported versions", "[plugin]") {
  FakeAgent agent;
  auto r = run({{"CNI_COMMAND", "VERSION"}}, "", agent);
  CHECK(r.rc == 0);
  CHECK(r.out ==
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\","
        "\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n");
}

TEST_CASE("no CNI_COMMAND prints the about text to stderr", "[plugin]") {
  FakeAgent agent;
  auto r = run({}, "", agent);
  CHECK(r.rc == 0);
  CHECK(r.out.empty());
  CHECK(r.err.find("CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0") != std::string::npos);
}

TEST_CASE("configuration keys match case-insensitively and unknown keys are ignored",
          "[plugin][config]") {
  auto doc = Json::parse(R"({"CNIVERSION":"1.0.0","Name":"n","AMBIENT_ENABLED":true,
    "Exclude_Namespaces":["a","b"],"POD_namespace":"istio-system","unknown":{"x":1},
    "kubernetes":{"kubeconfig":"/x"},"enablement_selectors":[{"podSelector":{"matchLabels":{"a":"b"}}}],
    "native_nftables":true,"enable_ambient_detection_retry":true,"plugin_log_level":"debug",
    "cni_agent_run_dir":"/r"})");
  auto c = parse_conf(doc);
  REQUIRE(c);
  CHECK(c->cni_version == "1.0.0");
  CHECK(c->name == "n");
  CHECK(c->ambient_enabled);
  CHECK(c->exclude_namespaces == std::vector<std::string>{"a", "b"});
  CHECK(c->pod_namespace == "istio-system");
  CHECK(c->native_nftables);
  CHECK(c->enable_ambient_detection_retry);
  CHECK(c->plugin_log_level == "debug");
  CHECK(c->cni_agent_run_dir == "/r");
  CHECK(c->enablement_selectors.size() == 1);
}

TEST_CASE("the last of duplicate keys wins and null keeps the default", "[plugin][config]") {
  auto c = parse_conf(Json::parse(R"({"name":"n","ambient_enabled":true,"AMBIENT_ENABLED":false,
                                      "exclude_namespaces":null})"));
  REQUIRE(c);
  CHECK_FALSE(c->ambient_enabled);
  CHECK(c->exclude_namespaces.empty());
}

TEST_CASE("a wrong type is rejected with a message naming the key", "[plugin][config]") {
  auto [doc, what] = GENERATE(table<std::string, std::string>({
      {R"({"name":"n","ambient_enabled":"true"})", "ambient_enabled"},
      {R"({"name":"n","exclude_namespaces":"kube-system"})", "exclude_namespaces"},
      {R"({"name":"n","exclude_namespaces":[1]})", "exclude_namespaces"},
      {R"({"name":"n","cni_agent_run_dir":5})", "cni_agent_run_dir"},
      {R"({"name":"n","enablement_selectors":[{"podSelector":{"matchLabels":{"a":1}}}]})",
       "matchLabels"},
      {R"({"name":"n","prevResult":[]})", "prevResult"},
  }));
  auto c = parse_conf(Json::parse(doc));
  REQUIRE_FALSE(c);
  CHECK(c.error().describe().rfind("failed to parse network configuration: ", 0) == 0);
  CHECK(c.error().describe().find(what) != std::string::npos);
}

TEST_CASE("CNI command validation and error codes", "[plugin][cni]") {
  FakeAgent agent;
  SECTION("missing env vars are listed together (code 4)") {
    auto r = run({{"CNI_COMMAND", "ADD"}}, conf("1.0.0"), agent);
    CHECK(r.rc == 1);
    CHECK(r.out_json()["code"] == 4);
    CHECK(r.out_json()["msg"] ==
          "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing");
  }
  SECTION("DEL does not need CNI_NETNS") {
    auto env = add_env();
    env["CNI_COMMAND"] = "DEL";
    env.erase("CNI_NETNS");
    auto r = run(env, conf("1.0.0"), agent);
    CHECK(r.rc == 0);
    CHECK(r.out.empty());
  }
  SECTION("unknown command (code 4)") {
    auto env = add_env();
    env["CNI_COMMAND"] = "FROB";
    auto r = run(env, conf("1.0.0"), agent);
    CHECK(r.out_json()["code"] == 4);
  }
  SECTION("malformed stdin (code 6)") {
    auto r = run(add_env(), "{not json", agent);
    CHECK(r.rc == 1);
    CHECK(r.out_json()["code"] == 6);
    CHECK(agent.calls.empty());
  }
  SECTION("missing network name (code 7)") {
    auto r = run(add_env(), R"({"cniVersion":"1.0.0","type":"istio-cni"})", agent);
    CHECK(r.out_json()["code"] == 7);
    CHECK(r.out_json()["msg"] == "missing network name");
  }
  SECTION("unsupported version (code 1)") {
    auto r = run(add_env(), conf("9.9.9"), agent);
    CHECK(r.out_json()["code"] == 1);
    CHECK(r.out_json()["msg"] == "incompatible CNI versions");
  }
  SECTION("bad container ID and interface name (code 4)") {
    auto env = add_env();
    // libcni's ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$
    for (const char* bad : {"-bad", "bad id", "_x", ".x", "x/y", "x:y", "caf\xc3\xa9", ""}) {
      env["CNI_CONTAINERID"] = bad;
      INFO(bad);
      auto r = run(env, conf("1.0.0"), agent);
      CHECK(r.out_json()["code"] == 4);
    }
    env["CNI_CONTAINERID"] = "-bad id";
    CHECK(run(env, conf("1.0.0"), agent).out_json()["msg"] == "invalid characters in containerID");
    for (const char* good : {"a", "Z9", "0abc_D.e-f", "9-"}) {
      env["CNI_CONTAINERID"] = good;
      INFO(good);
      CHECK(run(env, conf("1.0.0"), agent).rc == 0);
    }
    env = add_env();
    env["CNI_IFNAME"] = "eth0:1";
    CHECK(run(env, conf("1.0.0"), agent).out_json()["code"] == 4);
    env["CNI_IFNAME"] = "a-very-long-interface-name";
    CHECK(run(env, conf("1.0.0"), agent).out_json()["msg"] == "interface name is too long");
  }
  SECTION("CHECK needs 0.4.0, GC and STATUS need 1.1.0") {
    auto env = add_env();
    env["CNI_COMMAND"] = "CHECK";
    CHECK(run(env, conf("0.3.1"), agent).out_json()["msg"] ==
          "config version does not allow CHECK");
    CHECK(run(env, conf("0.4.0"), agent).rc == 0);
    for (const char* cmd : {"GC", "STATUS"}) {
      std::map<std::string, std::string> e = {{"CNI_COMMAND", cmd}, {"CNI_PATH", "/x"}};
      auto old = run(e, conf("1.0.0"), agent);
      CHECK(old.out_json()["msg"] == std::string("config version does not allow ") + cmd);
      auto ok = run(e, conf("1.1.0"), agent);
      CHECK(ok.rc == 0);
      CHECK(ok.out.empty());
    }
  }
  SECTION("wrong type in the config fails ADD with 999") {
    auto r = run(add_env(), conf("1.0.0", R"("ambient_enabled":"yes")"), agent);
    CHECK(r.out_json()["code"] == 999);
    CHECK(r.out_json()["msg"].get<std::string>().find("ambient_enabled") != std::string::npos);
  }
  SECTION("malformed CNI_ARGS fails ADD") {
    auto env = add_env();
    env["CNI_ARGS"] = "K8S_POD_NAME=a;broken";
    auto r = run(env, conf("1.0.0"), agent);
    CHECK(r.out_json()["msg"] == "failed to load args: ARGS: invalid pair \"broken\"");
  }
}

TEST_CASE("CNI_ARGS parsing", "[plugin][cni]") {
  auto a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns;K8S_POD_UID=u;X=y");
  REQUIRE(a);
  CHECK(a->pod_name == "p");
  CHECK(a->pod_namespace == "ns");
  CHECK(a->pod_uid == "u");
  CHECK_FALSE(parse_cni_args("X=y"));
  CHECK_FALSE(parse_cni_args("IgnoreUnknown=maybe;X=y"));
  CHECK_FALSE(parse_cni_args("K8S_POD_NAME=a=b"));
}

TEST_CASE("prevResult passes through unchanged in every CNI version", "[plugin][result]") {
  FakeAgent agent;
  SECTION("1.x keeps every field") {
    for (const char* v : {"1.0.0", "1.1.0"}) {
      auto r = run(add_env(), conf(v), agent);
      REQUIRE(r.rc == 0);
      auto want = Json::parse(kPrev100);
      want["cniVersion"] = v;
      CHECK(r.out_json() == want);
      CHECK(r.out.find("\n    \"cniVersion\"") != std::string::npos);  // 4-space indent
    }
  }
  SECTION("0.3.x/0.4.0 carry ip versions") {
    const char* prev = R"({"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/x"}],
      "ips":[{"version":"4","interface":0,"address":"10.1.2.3/24","gateway":"10.1.2.1"}],
      "routes":[{"dst":"0.0.0.0/0"}],"dns":{}})";
    for (const char* v : {"0.3.0", "0.3.1", "0.4.0"}) {
      auto r = run(add_env(), conf(v, "", prev), agent);
      REQUIRE(r.rc == 0);
      auto want = Json::parse(prev);
      want["cniVersion"] = v;
      CHECK(r.out_json() == want);
    }
  }
  SECTION("0.1.0/0.2.0 use ip4/ip6") {
    const char* prev = R"({"cniVersion":"0.2.0","ip4":{"ip":"10.1.2.3/24","gateway":"10.1.2.1",
      "routes":[{"dst":"0.0.0.0/0","gw":"10.1.2.1"}]},"dns":{"nameservers":["1.2.3.4"]}})";
    for (const char* v : {"0.1.0", "0.2.0"}) {
      auto r = run(add_env(), conf(v, "", prev), agent);
      REQUIRE(r.rc == 0);
      auto want = Json::parse(prev);
      want["cniVersion"] = v;
      CHECK(r.out_json() == want);
    }
  }
  SECTION("keys inside prevResult match case-insensitively") {
    auto r = run(add_env(),
                 conf("1.0.0", "", R"({"cniversion":"1.0.0","IPS":[{"Address":"10.0.0.9/16"}]})"),
                 agent);
    REQUIRE(r.rc == 0);
    CHECK(r.out_json()["ips"][0]["address"] == "10.0.0.9/16");
  }
  SECTION("no prevResult prints an empty result, which 0.2.0 cannot express") {
    CHECK(run(add_env(), conf("1.0.0", "", ""), agent).out_json() ==
          Json::parse(R"({"cniVersion":"1.0.0"})"));
    auto r = run(add_env(), conf("0.2.0", "", ""), agent);
    CHECK(r.out_json()["msg"] == "cannot convert: no valid IP addresses");
  }
  SECTION("a malformed prevResult fails ADD") {
    auto r = run(add_env(), conf("1.0.0", "", R"({"ips":[{"address":"not-an-ip"}]})"), agent);
    CHECK(r.rc == 1);
    CHECK(r.out_json()["msg"].get<std::string>().rfind("could not parse prevResult", 0) == 0);
  }
}

TEST_CASE("ADD posts the upstream event to the agent and fails closed", "[plugin][agent]") {
  FakeAgent agent;
  SECTION("the body has upstream's shape plus our keys") {
    auto r = run(add_env(), conf("1.0.0"), agent);
    REQUIRE(r.rc == 0);
    REQUIRE(agent.calls.size() == 1);
    CHECK(agent.calls[0].socket == "/run/test-agent/pluginevent.sock");
    CHECK(agent.calls[0].target == "/cmdadd");
    CHECK(
        agent.calls[0].body ==
        R"({"Netns":"/var/run/netns/pod1","PodName":"web-1","PodNamespace":"demo","IPs":[)"
        R"({"Interface":0,"Address":{"IP":"10.1.2.3","Mask":"////AA=="},"Gateway":"10.1.2.1"},)"
        R"({"Interface":0,"Address":{"IP":"fd00::3","Mask":"//////////8AAAAAAAAAAA=="},"Gateway":""}],)"
        R"("PodUID":"u-1","ContainerID":"c0ffee","IfName":"eth0"})");
  }
  SECTION("no prevResult sends IPs null") {
    REQUIRE(run(add_env(), conf("1.0.0", "", ""), agent).rc == 0);
    CHECK(Json::parse(agent.calls.at(0).body)["IPs"].is_null());
  }
  SECTION("a non-200 answer fails ADD with the agent's message") {
    agent.reply = HttpReply{500, "pod demo/web-1: no ztunnel connection\n"};
    auto r = run(add_env(), conf("1.0.0"), agent);
    CHECK(r.rc == 1);
    CHECK(r.out_json()["code"] == 999);
    CHECK(r.out_json()["msg"] ==
          "istio-cni cmdAdd failed to contact node Istio CNI agent: unable to push CNI event "
          "(status code 500): pod demo/web-1: no ztunnel connection");
  }
  SECTION("an unreachable agent fails ADD") {
    agent.reply =
        make_error(Errc::Unavailable,
                   "Post \"http://unix/cmdadd\": dial unix x: connect: No such file or directory");
    auto r = run(add_env(), conf("1.0.0"), agent);
    CHECK(r.rc == 1);
    CHECK(r.out_json()["msg"].get<std::string>().find("failed to send event request: Post") !=
          std::string::npos);
  }
  SECTION("excluded namespaces, the agent's own pod and non-pods pass without the agent") {
    agent.reply = HttpReply{500, "must not be called"};
    auto env = add_env();
    env["CNI_ARGS"] = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns";
    CHECK(run(env, conf("1.0.0"), agent).rc == 0);
    env["CNI_ARGS"] = "K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=istio-cni-node-x7";
    CHECK(run(env, conf("1.0.0"), agent).rc == 0);
    env["CNI_ARGS"] = "";
    CHECK(run(env, conf("1.0.0"), agent).rc == 0);
    CHECK(run(add_env(), conf("1.0.0", R"("AMBIENT_ENABLED":false)"), agent).rc == 0);
    CHECK(agent.calls.empty());
  }
}

TEST_CASE("DEL tells the agent but never fails on its answer", "[plugin][agent]") {
  FakeAgent agent;
  auto env = add_env();
  env["CNI_COMMAND"] = "DEL";
  agent.reply = HttpReply{404, "404 page not found\n"};  // an upstream agent
  auto r = run(env, conf("1.0.0"), agent);
  CHECK(r.rc == 0);
  CHECK(r.out.empty());
  REQUIRE(agent.calls.size() == 1);
  CHECK(agent.calls[0].target == "/cmddel");
  agent.reply = make_error(Errc::Unavailable, "agent down");
  CHECK(run(env, conf("1.0.0"), agent).rc == 0);
}

TEST_CASE("with the agent unreachable, the plugin decides through the API server",
          "[plugin][fallback]") {
  FakeAgent agent;
  agent.reply =
      make_error(Errc::Unavailable, "dial unix /run/x/pluginevent.sock: connect: refused");
  FakeKube kube;
  const std::string selectors =
      R"("enablement_selectors":[{"podSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}}},)"
      R"({"namespaceSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}},)"
      R"("podSelector":{"matchExpressions":[{"key":"istio.io/dataplane-mode","operator":"NotIn","values":["none"]}]}}])";
  kube.objects["/api/v1/namespaces/demo/pods/web-1"] =
      HttpReply{200, R"({"metadata":{"name":"web-1","namespace":"demo"}})"};
  SECTION("an ambient pod fails closed, naming the agent") {
    kube.objects["/api/v1/namespaces/demo"] = HttpReply{
        200, R"({"metadata":{"name":"demo","labels":{"istio.io/dataplane-mode":"ambient"}}})"};
    auto r = run(add_env(), conf("1.0.0", selectors), agent, &kube);
    CHECK(r.rc == 1);
    CHECK_THAT(r.out_json()["msg"].get<std::string>(),
               Catch::StartsWith("istio-cni cmdAdd failed to contact node Istio CNI agent") &&
                   Catch::Contains("pluginevent.sock"));
    CHECK(kube.gets.size() == 2);
  }
  SECTION("a pod that is not ambient starts") {
    kube.objects["/api/v1/namespaces/demo"] = HttpReply{200, R"({"metadata":{"name":"demo"}})"};
    auto r = run(add_env(), conf("1.0.0", selectors), agent, &kube);
    CHECK(r.rc == 0);
    CHECK(r.out_json()["ips"].size() == 2);
  }
  SECTION("API errors: two attempts, then the ADD fails (nothing could decide)") {
    auto r = run(add_env(), conf("1.0.0", selectors), agent, &kube);
    CHECK(r.rc == 1);
    CHECK(kube.gets.size() == 4);  // pod + namespace (missing), twice
    CHECK_THAT(r.out_json()["msg"].get<std::string>(),
               Catch::Contains("failed to contact node Istio CNI agent") &&
                   Catch::Contains("2 attempts") && Catch::Contains("not found"));
  }
  SECTION("API errors with enable_ambient_detection_retry: 31 attempts, then fail") {
    auto r = run(add_env(), conf("1.0.0", selectors + R"(,"enable_ambient_detection_retry":true)"),
                 agent, &kube);
    CHECK(r.rc == 1);
    CHECK(kube.gets.size() == 62);  // pod + namespace (missing), 31 times
    CHECK_THAT(r.out_json()["msg"].get<std::string>(), Catch::Contains("31 attempts"));
  }
  SECTION("no kubeconfig: the ADD fails, saying both") {
    auto r = run(add_env(), conf("1.0.0", selectors), agent, nullptr);
    CHECK(r.rc == 1);
    CHECK_THAT(r.out_json()["msg"].get<std::string>(),
               Catch::Contains("failed to contact node Istio CNI agent") &&
                   Catch::Contains("createNewK8sClient"));
  }
}

TEST_CASE("while the agent answers, the plugin makes no API call", "[plugin][fallback]") {
  FakeAgent agent;
  FakeKube kube;
  agent.reply = HttpReply{500, "pod demo/web-1: no ztunnel connection\n"};
  CHECK(run(add_env(), conf("1.0.0"), agent, &kube).rc == 1);
  agent.reply = HttpReply{200, ""};
  CHECK(run(add_env(), conf("1.0.0"), agent, &kube).rc == 0);
  CHECK(kube.gets.empty());
}

namespace {

// The agent as the real client reports it when nothing listens on the
// socket.
const char* kAgentDown =
    "Post \"http://unix/cmdadd\": dial unix /run/test-agent/pluginevent.sock: connect: No such "
    "file or directory";

std::string msg_of(const Run& r) { return r.out_json()["msg"].get<std::string>(); }

size_t count(const std::vector<std::string>& v, const std::string& x) {
  return static_cast<size_t>(std::count(v.begin(), v.end(), x));
}

}  // namespace

TEST_CASE("with the agent unreachable, a pod the API cannot classify fails closed",
          "[plugin][fallback]") {
  FakeAgent agent;
  agent.reply = make_error(Errc::Unavailable, kAgentDown);
  FakeKube kube;
  std::vector<std::chrono::milliseconds> sleeps;
  const std::string pod_path = "/api/v1/namespaces/demo/pods/web-1";

  SECTION("API answering 500: two attempts 1 s apart, then the ADD fails naming both") {
    kube.every =
        HttpReply{500, R"({"kind":"Status","code":500,"message":"etcdserver: leader changed"})"};
    auto r = run(add_env(), conf("1.0.0"), agent, &kube, {.sleeps = &sleeps});
    CHECK(r.rc == 1);
    CHECK(r.out_json()["code"] == 999);  // the error alone: no result printed before it
    CHECK_THAT(msg_of(r),
               Catch::StartsWith("istio-cni cmdAdd failed to contact node Istio CNI agent: "
                                 "failed to send event request: ") &&
                   Catch::Contains("/run/test-agent/pluginevent.sock: connect: No such file") &&
                   Catch::Contains("HTTP 500") && Catch::Contains("etcdserver: leader changed") &&
                   Catch::Contains("after 2 attempts"));
    CHECK(count(kube.gets, pod_path) == 2);
    CHECK(sleeps == std::vector<std::chrono::milliseconds>{std::chrono::seconds(1)});
    CHECK(agent.calls.size() == 1);
  }
  SECTION("API answering 500 with enable_ambient_detection_retry: 31 attempts, 30 s of back-off") {
    kube.every =
        HttpReply{500, R"({"kind":"Status","code":500,"message":"etcdserver: leader changed"})"};
    auto r = run(add_env(), conf("1.0.0", R"("enable_ambient_detection_retry":true)"), agent, &kube,
                 {.sleeps = &sleeps});
    CHECK(r.rc == 1);
    CHECK_THAT(msg_of(r), Catch::Contains("pluginevent.sock") && Catch::Contains("HTTP 500") &&
                              Catch::Contains("after 31 attempts"));
    CHECK(count(kube.gets, pod_path) == 31);
    CHECK(sleeps == std::vector<std::chrono::milliseconds>(30, std::chrono::seconds(1)));
  }
  SECTION("API answering 403 fails the ADD") {
    kube.every = HttpReply{
        403,
        R"({"kind":"Status","code":403,"reason":"Forbidden","message":"pods \"web-1\" is forbidden: User \"system:serviceaccount:istio-system:istio-cni\" cannot get resource \"pods\""})"};
    auto r = run(add_env(), conf("1.0.0"), agent, &kube);
    CHECK(r.rc == 1);
    CHECK_THAT(msg_of(r), Catch::Contains("failed to contact node Istio CNI agent") &&
                              Catch::Contains("pluginevent.sock") && Catch::Contains("HTTP 403") &&
                              Catch::Contains("is forbidden"));
    CHECK(count(kube.gets, pod_path) == 2);
  }
  SECTION("API unreachable fails the ADD") {
    kube.every = make_error(Errc::Unavailable, "connect 10.96.0.1:443: Connection refused");
    auto r = run(add_env(), conf("1.0.0"), agent, &kube);
    CHECK(r.rc == 1);
    CHECK_THAT(msg_of(r), Catch::Contains("failed to contact node Istio CNI agent") &&
                              Catch::Contains("pluginevent.sock") &&
                              Catch::Contains("10.96.0.1:443: Connection refused"));
    CHECK(count(kube.gets, pod_path) == 2);
  }
  SECTION("an agent error that does not name the socket gets it added") {
    agent.reply = make_error(
        Errc::Timeout, "Post \"http://unix/cmdadd\": no answer from the agent within 5000 ms");
    kube.every = HttpReply{500, "boom"};
    auto r = run(add_env(), conf("1.0.0"), agent, &kube);
    CHECK(r.rc == 1);
    CHECK_THAT(msg_of(r), Catch::Contains("no answer from the agent within 5000 ms (agent socket "
                                          "/run/test-agent/pluginevent.sock)") &&
                              Catch::Contains("HTTP 500: boom"));
  }
  SECTION("a transient API error that clears in time decides the pod") {
    // Not ambient (no selectors match), found on the second attempt.
    int n = 0;
    struct Flaky : KubeApi {
      FakeKube& k;
      int& n;
      Flaky(FakeKube& f, int& c) : k(f), n(c) {}
      Result<HttpReply> get(const std::string& p) override {
        if (n++ == 0) return make_error(Errc::Unavailable, "connection reset by peer");
        return k.get(p);
      }
    };
    kube.objects[pod_path] = HttpReply{200, R"({"metadata":{"name":"web-1","namespace":"demo"}})"};
    kube.objects["/api/v1/namespaces/demo"] = HttpReply{200, R"({"metadata":{"name":"demo"}})"};
    std::string out;
    PluginIo io{.getenv = [env = add_env()](const char* name) -> std::optional<std::string> {
                  auto it = env.find(name);
                  if (it == env.end()) return std::nullopt;
                  return it->second;
                },
                .stdin_data = conf("1.0.0"),
                .out = [&](std::string_view s) { out += s; },
                .err = [](std::string_view) {},
                .kube_api = [&](const std::string&) -> Result<std::unique_ptr<KubeApi>> {
                  return std::unique_ptr<KubeApi>(new Flaky(kube, n));
                },
                .sleep = [&](std::chrono::milliseconds d) { sleeps.push_back(d); }};
    CHECK(run_plugin(io, agent) == 0);
    CHECK(Json::parse(out)["ips"].size() == 2);
    CHECK(sleeps.size() == 1);
  }
}

TEST_CASE("excluded namespaces are decided before the agent and the API", "[plugin][fallback]") {
  FakeAgent agent;
  agent.reply = make_error(Errc::Unavailable, kAgentDown);
  FakeKube kube;
  kube.every = HttpReply{500, "must not be asked"};
  auto env = add_env();
  env["CNI_ARGS"] = "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1";
  auto r = run(env, conf("1.0.0"), agent, &kube);
  CHECK(r.rc == 0);
  auto want = Json::parse(kPrev100);
  want["cniVersion"] = "1.0.0";
  CHECK(r.out_json() == want);
  CHECK(agent.calls.empty());
  CHECK(kube.loads == 0);
  CHECK(kube.gets.empty());

  // The same pod outside the excluded list goes to the agent, then the API,
  // and with neither able to decide it does not start.
  env["CNI_ARGS"] = "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-public;K8S_POD_NAME=coredns-1";
  auto other = run(env, conf("1.0.0"), agent, &kube);
  CHECK(other.rc == 1);
  CHECK(agent.calls.size() == 1);
  CHECK(kube.loads == 1);
}

TEST_CASE("the agent's own DaemonSet pod starts while nothing can decide", "[plugin][fallback]") {
  // An upgrade: the old agent is gone and the API cannot be asked. Its
  // replacement must start, or no agent ever comes back.
  FakeAgent agent;
  agent.reply = make_error(Errc::Unavailable, kAgentDown);
  FakeKube kube;
  kube.every = make_error(Errc::Unavailable, "connect 10.96.0.1:443: Connection refused");
  auto env = add_env();
  env["CNI_ARGS"] =
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=istio-cni-node-7xk2p";
  SECTION("in pod_namespace: let through, prevResult printed, nothing redirected") {
    auto r = run(env, conf("1.0.0"), agent, &kube);
    CHECK(r.rc == 0);
    auto want = Json::parse(kPrev100);
    want["cniVersion"] = "1.0.0";
    CHECK(r.out_json() == want);
    CHECK(agent.calls.empty());  // no /cmdadd: no redirection is asked for
    CHECK(kube.loads == 0);
    CHECK(kube.gets.empty());
  }
  SECTION("the name alone is not enough: another namespace fails closed") {
    env["CNI_ARGS"] = "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=istio-cni-node-7xk2p";
    auto r = run(env, conf("1.0.0"), agent, &kube);
    CHECK(r.rc == 1);
    CHECK_THAT(msg_of(r),
               Catch::Contains("pluginevent.sock") && Catch::Contains("Connection refused"));
  }
  SECTION("without pod_namespace in the config no pod is the agent's") {
    const std::string no_pod_ns =
        R"({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"istio-cni","ambient_enabled":true,)"
        R"("cni_agent_run_dir":"/run/test-agent","prevResult":)" +
        std::string(kPrev100) + "}";
    auto r = run(env, no_pod_ns, agent, &kube);
    CHECK(r.rc == 1);
    CHECK(agent.calls.size() == 1);
  }
  SECTION("a name that only contains the prefix is not the agent's") {
    env["CNI_ARGS"] =
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=my-istio-cni-node-1";
    CHECK(run(env, conf("1.0.0"), agent, &kube).rc == 1);
  }
}

TEST_CASE("--version and -v print the project's version", "[plugin][cli]") {
  FakeAgent agent;
  const std::string about = "CNI plugin istio-cni " + std::string(ambient::kVersion) +
                            "\nCNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, "
                            "0.4.0, 1.0.0, 1.1.0\n";
  for (const char* flag : {"--version", "-v"}) {
    INFO(flag);
    // Even with CNI variables left set in the shell, the flag is answered.
    auto r = run(add_env(), "", agent, nullptr, {.args = {flag}});
    CHECK(r.rc == 0);
    CHECK(r.out == about);
    CHECK(r.err.empty());
    CHECK(agent.calls.empty());
    CHECK(is_answered_flag({flag}));
  }
  auto help = run({}, "", agent, nullptr, {.args = {"--help"}});
  CHECK(help.rc == 0);
  CHECK_THAT(help.out, Catch::Contains("Usage: istio-cni [--help | --version]"));
  // Anything else on the command line is ignored, as upstream's skeleton
  // ignores it: the CNI command runs.
  CHECK_FALSE(is_answered_flag({"--frob"}));
  CHECK_FALSE(is_answered_flag({}));
  auto r = run(add_env(), conf("1.0.0"), agent, nullptr, {.args = {"--frob"}});
  CHECK(r.rc == 0);
  CHECK(agent.calls.size() == 1);
}
