// The plugin as the runtime runs it: any network configuration on stdin
// (prevResult of every CNI version included) under every CNI command, with
// the agent answering 200, 500 or not at all (then the API fallback, whose
// answers are fixed). Byte 0 picks the command, byte 1 the agent's answer;
// the rest is stdin.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "dispatcher.h"
#include "kube_fallback.h"

using namespace ambient;
using namespace ambient::cni;

namespace {

class Agent : public AgentClient {
 public:
  explicit Agent(uint8_t mode) : mode_(mode % 3) {}
  Result<HttpReply> post(const std::string&, std::string_view, const std::string&,
                         std::chrono::milliseconds) override {
    if (mode_ == 0) return HttpReply{200, ""};
    if (mode_ == 1) return HttpReply{500, "pod demo/web: no ztunnel connection\n"};
    return make_error(Errc::Unavailable, "dial unix: connect: no such file or directory");
  }

 private:
  uint8_t mode_;
};

// The API server of the fallback: an ambient pod in a plain namespace.
class Kube : public KubeApi {
 public:
  Result<HttpReply> get(const std::string& path) override {
    if (path.find("/pods/") != std::string::npos) {
      return HttpReply{200, R"({"metadata":{"name":"web","namespace":"demo","labels":)"
                            R"({"istio.io/dataplane-mode":"ambient"}},"spec":{}})"};
    }
    return HttpReply{200, R"({"metadata":{"name":"demo","labels":{}}})"};
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const char* kCommands[] = {"ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", "BOGUS"};
  std::map<std::string, std::string> env = {
      {"CNI_COMMAND", kCommands[data[0] % 7]},
      {"CNI_CONTAINERID", "c0ffee"},
      {"CNI_NETNS", "/var/run/netns/pod1"},
      {"CNI_IFNAME", "eth0"},
      {"CNI_PATH", "/opt/cni/bin"},
      {"CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;K8S_POD_UID=u-1"}};
  Agent agent(data[1]);
  PluginIo io{.getenv = [&](const char* n) -> std::optional<std::string> {
                auto it = env.find(n);
                if (it == env.end()) return std::nullopt;
                return it->second;
              },
              .stdin_data = std::string(reinterpret_cast<const char*>(data) + 2, size - 2),
              .out = [](std::string_view) {},
              .err = [](std::string_view) {},
              .netns_identity = {},
              .kube_api = [](const std::string&) -> Result<std::unique_ptr<KubeApi>> {
                return std::unique_ptr<KubeApi>(new Kube());
              },
              .sleep = [](std::chrono::milliseconds) {}};
  (void)run_plugin(io, agent);
  return 0;
}
