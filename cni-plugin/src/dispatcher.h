// The CNI skeleton (env, validation, error codes) and istio-cni's commands.
// Everything the plugin touches in the outside world comes through PluginIo
// and AgentClient, so the whole plugin runs in unit tests.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent_client.h"
#include "kube_fallback.h"

namespace ambient::cni {

struct PluginIo {
  std::function<std::optional<std::string>(const char*)> getenv;
  std::string stdin_data;
  // Command-line arguments after the program name. Runtimes pass none, so
  // any here come from a person (--help, --version).
  std::vector<std::string> args;
  // Sinks rather than streams: an iostream in the binary costs every exec
  // the C++ locale's set-up (about 15 page faults).
  std::function<void(std::string_view)> out;  // the CNI result or error, nothing else
  std::function<void(std::string_view)> err;  // log lines, each written as it happens
  // Inode identity of the plugin's own netns ("dev:ino"), for the code-8
  // check; empty disables it.
  std::function<std::string(const std::string& path)> netns_identity;
  // The API client for the fallback decision when the agent is unreachable;
  // unset = KubeconfigApi from <run dir>/istio-cni-kubeconfig.
  std::function<Result<std::unique_ptr<KubeApi>>(const std::string& kubeconfig)> kube_api;
  // The API fallback's back-off between attempts; unset = real sleep.
  std::function<void(std::chrono::milliseconds)> sleep;
  // The log channel to the agent (docs/cni-plugin.md#log-channel): whether
  // <run dir>/log.sock exists once the config is parsed, and the one POST
  // /log body sent to it at the end of the run. Either unset: no channel.
  std::function<bool(const std::string& path)> log_socket_exists;
  std::function<void(const std::string& socket_path, std::string_view body)> send_log;
};

// CNI error codes (containernetworking/cni pkg/types).
enum CniCode : int {
  kErrIncompatibleVersion = 1,
  kErrUnsupportedField = 2,
  kErrUnknownContainer = 3,
  kErrInvalidEnv = 4,
  kErrIoFailure = 5,
  kErrDecodingFailure = 6,
  kErrInvalidNetworkConfig = 7,
  kErrInvalidNetNs = 8,
  kErrTryAgainLater = 11,
  kErrInternal = 999,
};

// Runs one plugin invocation; returns the process exit status.
int run_plugin(PluginIo& io, AgentClient& agent);

// Whether args start with a flag run_plugin answers by itself (--help, -h,
// --version, -v). Then no CNI command runs, so stdin need not be read.
bool is_answered_flag(const std::vector<std::string>& args);

// Splits CNI_ARGS as upstream's LoadArgs does; exposed for tests.
struct CniArgs {
  std::string pod_name, pod_namespace, pod_uid, infra_container_id;
};
Result<CniArgs> parse_cni_args(std::string_view args);

}  // namespace ambient::cni
