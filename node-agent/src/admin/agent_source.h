// The agent's real AdminSource: reads the pod cache, the journal, the ZDS
// server and the backend; verifies a pod with the backend's own verify()
// plus a look at ztunnel's listeners in its netns. It holds references to
// parts the composition root owns and outlives.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admin/journal.h"
#include "admin/source.h"
#include "agent/pod_cache.h"
#include "config/config.h"
#include "netns/netns.h"
#include "redirect/backend.h"
#include "zds/zds_server.h"

namespace ambient::redirect::ebpf {
class Programs;
}

namespace ambient::admin {

struct AgentSourceDeps {
  const agent::Config& config;
  const agent::PodCache& pods;
  const redirect::RedirectBackend& backend;
  const zds::ZdsServer& zds;
  Journal& journal;
  EventHub& events;
  std::string backend_kind;    // "nftables", ...
  std::string backend_reason;  // why detection chose it
  std::string host_probes;     // how kubelet's probes are told apart
  std::function<bool()> ready;
  std::function<bool()> zds_accepting;
  std::function<int64_t()> drift_repairs;
  // Every option as the agent runs with it (flag name, value).
  std::vector<std::pair<std::string, std::string>> config_values;
  // For `trace`: the node's netns (null: the agent's own is the node's)
  // and the eBPF programs, whose counters tell a decision (null: no eBPF).
  netns::NetnsRef host_netns;
  // Opens the netns `trace --netns` names under the same rules as a CNI
  // request's (agent::Agent::open_pod_netns): a runtime's path, never the
  // node's or the agent's own netns. `pod` names the requester in errors.
  std::function<Result<netns::Netns>(const std::string& path, const std::string& pod)>
      open_pod_netns;
  std::shared_ptr<const redirect::ebpf::Programs> ebpf_programs;
};

class AgentSource : public AdminSource {
 public:
  explicit AgentSource(AgentSourceDeps deps)
      : d_(std::move(deps)), started_(std::chrono::steady_clock::now()) {}

  v1::Status status() const override;
  std::vector<v1::Pod> pods() const override;
  Result<v1::PodVerify> verify(const v1::Pod& pod) const override;
  Result<v1::TraceResponse> trace(const v1::Pod* pod, const v1::TraceRequest& req) override;
  EventHub& events() override { return d_.events; }

  // The same check for a cached pod, by UID (the periodic self-verify).
  Result<v1::PodVerify> verify_uid(const std::string& uid) const;
  // ztunnel's listeners missing in a cached pod's netns ("tcp/15001", ...).
  Result<std::vector<std::string>> missing_listeners(const std::string& uid) const;

 private:
  AgentSourceDeps d_;
  std::chrono::steady_clock::time_point started_;
};

// The cached pod as the admin API shows it (journal record, if any, merged).
v1::Pod pod_message(const agent::EnrolledPod& p, const PodRecord* rec, std::string_view backend);

}  // namespace ambient::admin
