// The plugin's log lines and their channel to the agent
// (docs/cni-plugin.md#log-channel): kept from the moment the config is
// parsed if <run dir>/log.sock exists then, and sent in one POST /log whose
// body is a JSON array of the lines written to stderr.
#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dispatcher.h"
#include "lib/json_fields.h"
#include "logger.h"

using namespace ambient;
using namespace ambient::cni;
using json::Json;

namespace {

class OkAgent : public AgentClient {
 public:
  Result<HttpReply> reply = HttpReply{200, ""};
  Result<HttpReply> post(const std::string&, std::string_view, const std::string&,
                         std::chrono::milliseconds) override {
    return reply;
  }
};

struct Sent {
  std::string socket, body;
};

struct Run {
  int rc = 0;
  std::string err;
  std::vector<std::string> checked;  // paths asked about
  std::vector<Sent> sent;
};

constexpr const char* kRunDir = "/run/test-agent";

std::string conf(const std::string& level) {
  return R"({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"istio-cni",)"
         R"("ambient_enabled":true,"cni_agent_run_dir":")" +
         std::string(kRunDir) + R"(","plugin_log_level":")" + level + R"("})";
}

// One plugin run; log.sock "exists" when `socket_exists`.
Run run(const std::string& command, const std::string& in, bool socket_exists, OkAgent agent = {}) {
  std::map<std::string, std::string> env = {
      {"CNI_COMMAND", command},
      {"CNI_CONTAINERID", "c0ffee"},
      {"CNI_NETNS", "/var/run/netns/pod1"},
      {"CNI_IFNAME", "eth0"},
      {"CNI_PATH", "/opt/cni/bin"},
      {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1"}};
  Run r;
  PluginIo io{.getenv = [&](const char* n) -> std::optional<std::string> {
                auto it = env.find(n);
                if (it == env.end()) return std::nullopt;
                return it->second;
              },
              .stdin_data = in,
              .args = {},
              .out = [](std::string_view) {},
              .err = [&](std::string_view s) { r.err += s; },
              .netns_identity = {},
              .kube_api = {},
              .sleep = {},
              .log_socket_exists =
                  [&](const std::string& path) {
                    r.checked.push_back(path);
                    return socket_exists;
                  },
              .send_log =
                  [&](const std::string& socket, std::string_view body) {
                    r.sent.push_back({socket, std::string(body)});
                  }};
  r.rc = run_plugin(io, agent);
  return r;
}

// stderr split into lines, each keeping its "\n".
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  for (size_t start = 0; start < text.size();) {
    const size_t nl = text.find('\n', start);
    const size_t end = nl == std::string::npos ? text.size() : nl + 1;
    out.push_back(text.substr(start, end - start));
    start = end;
  }
  return out;
}

}  // namespace

TEST_CASE("plugin log: with log.sock present, one POST /log carries every line of the run",
          "[plugin][log]") {
  auto r = run("ADD", conf("debug"), true);
  REQUIRE(r.rc == 0);
  CHECK(r.checked == std::vector<std::string>{std::string(kRunDir) + "/log.sock"});
  REQUIRE(r.sent.size() == 1);
  CHECK(r.sent[0].socket == std::string(kRunDir) + "/log.sock");
  const Json body = Json::parse(r.sent[0].body);
  REQUIRE(body.is_array());
  std::vector<std::string> sent;
  for (const auto& s : body) {
    REQUIRE(s.is_string());
    sent.push_back(s.get<std::string>());
  }
  // The very lines of stderr, each a JSON object with its trailing newline.
  CHECK(sent == lines_of(r.err));
  REQUIRE_FALSE(sent.empty());
  for (const auto& line : sent) {
    CHECK(line.back() == '\n');
    const Json j = Json::parse(line);
    CHECK(j["level"].is_string());
    CHECK(j["time"].is_string());
    CHECK(j["msg"].is_string());
  }
  const Json last = Json::parse(sent.back());
  CHECK(last["msg"] == "pod enrolled or skipped by the node agent");
  CHECK(last["pod"] == "demo/web-1");
  CHECK(last["level"] == "info");
}

TEST_CASE("plugin log: nothing is sent when log.sock is absent", "[plugin][log]") {
  auto r = run("ADD", conf("debug"), false);
  CHECK(r.rc == 0);
  CHECK(r.checked.size() == 1);
  CHECK(r.sent.empty());
  CHECK_THAT(r.err, Catch::Contains("pod enrolled or skipped by the node agent"));
}

TEST_CASE("plugin log: no request when the level lets no line through", "[plugin][log]") {
  auto r = run("ADD", conf("none"), true);
  CHECK(r.rc == 0);
  CHECK(r.err.empty());
  CHECK(r.sent.empty());
}

TEST_CASE("plugin log: a failed ADD still sends its lines, after the error", "[plugin][log]") {
  OkAgent agent;
  agent.reply = HttpReply{500, "no ztunnel\n"};
  auto r = run("ADD", conf("info"), true, agent);
  CHECK(r.rc == 1);
  REQUIRE(r.sent.size() == 1);
  CHECK_THAT(r.sent[0].body, Catch::Contains("status code 500"));
}

TEST_CASE("plugin log: DEL's lines go to the agent too", "[plugin][log]") {
  OkAgent agent;
  agent.reply = HttpReply{404, "404 page not found\n"};
  auto r = run("DEL", conf("info"), true, agent);
  CHECK(r.rc == 0);
  REQUIRE(r.sent.size() == 1);
  CHECK_THAT(r.sent[0].body, Catch::Contains("could not tell the node agent about DEL"));
}

TEST_CASE("plugin log: a config that does not parse never looks for log.sock", "[plugin][log]") {
  auto r = run("ADD", R"({"cniVersion":"1.0.0","name":"n","prevResult":[]})", true);
  CHECK(r.rc == 1);
  CHECK(r.checked.empty());
  CHECK(r.sent.empty());
}

TEST_CASE("plugin log: only lines written after keep_lines are kept", "[plugin][log]") {
  std::string err;
  const std::function<void(std::string_view)> sink = [&](std::string_view s) { err += s; };
  Logger logger(sink);
  logger.log(Logger::Info, "before the config", "");
  logger.keep_lines();
  logger.set_level("warn");
  logger.log(Logger::Info, "filtered", "");
  logger.log(Logger::Error, "kept", "ns/p");
  REQUIRE(logger.kept().size() == 1);
  CHECK(lines_of(err).size() == 2);
  CHECK(lines_of(err).back() == logger.kept().front());
  const Json j = Json::parse(logger.kept().front());
  CHECK(j["msg"] == "kept");
  CHECK(j["pod"] == "ns/p");
  // An unknown level's warning is kept as well: the agent's log is where
  // an operator looks for it.
  Logger other(sink);
  other.keep_lines();
  other.set_level("loud");
  REQUIRE(other.kept().size() == 1);
  CHECK_THAT(other.kept().front(), Catch::Contains("unknown plugin_log_level"));
}

TEST_CASE("plugin log: the request is one HTTP/1.1 POST /log of JSON", "[plugin][log]") {
  const std::string body = log_body({"{\"msg\":\"a \\\"q\\\"\"}\n", "{\"msg\":\"b\"}\n"});
  CHECK(body == R"(["{\"msg\":\"a \\\"q\\\"\"}\n","{\"msg\":\"b\"}\n"])");
  CHECK(log_body({}) == "[]");
  const std::string req = log_request(body);
  CHECK(req.rfind("POST /log HTTP/1.1\r\n", 0) == 0);
  CHECK_THAT(req,
             Catch::Contains("\r\nHost: unix\r\n") &&
                 Catch::Contains("\r\nContent-Type: application/json\r\n") &&
                 Catch::Contains("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n") &&
                 Catch::Contains("\r\nConnection: close\r\n"));
  CHECK(req.substr(req.find("\r\n\r\n") + 4) == body);
}
