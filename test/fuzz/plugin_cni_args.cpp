// CNI_ARGS as the runtime sets it: split on its own, then a whole ADD with
// it (a valid configuration with a 1.0.0 prevResult, the agent answering 200).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "dispatcher.h"

using namespace ambient;
using namespace ambient::cni;

namespace {

class Agent : public AgentClient {
 public:
  Result<HttpReply> post(const std::string&, std::string_view, const std::string&,
                         std::chrono::milliseconds) override {
    return HttpReply{200, ""};
  }
};

const char kConf[] =
    R"({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"istio-cni","ambient_enabled":true,)"
    R"("cni_agent_run_dir":"/var/run/istio-cni","exclude_namespaces":["kube-system"],)"
    R"("prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/pod1"}],)"
    R"("ips":[{"interface":0,"address":"10.1.2.3/24","gateway":"10.1.2.1"}]}})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string args(reinterpret_cast<const char*>(data), size);
  (void)parse_cni_args(args);
  std::map<std::string, std::string> env = {
      {"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", "c0ffee"}, {"CNI_NETNS", "/var/run/netns/pod1"},
      {"CNI_IFNAME", "eth0"}, {"CNI_PATH", "/opt/cni/bin"},  {"CNI_ARGS", args}};
  Agent agent;
  PluginIo io{.getenv = [&](const char* n) -> std::optional<std::string> {
                auto it = env.find(n);
                if (it == env.end()) return std::nullopt;
                return it->second;
              },
              .stdin_data = kConf,
              .out = [](std::string_view) {},
              .err = [](std::string_view) {},
              .netns_identity = {},
              .kube_api = [](const std::string&) -> Result<std::unique_ptr<KubeApi>> {
                return make_error(Errc::NotFound, "no API server while fuzzing");
              },
              .sleep = [](std::chrono::milliseconds) {}};
  (void)run_plugin(io, agent);
  return 0;
}
