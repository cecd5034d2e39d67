// A CRI client for the runtime tests: the calls kubelet makes to create,
// stop and remove pods and their containers, over the runtime's gRPC socket.
// Sandbox configs are filled as kubelet fills them, because containerd turns
// those fields into what the CNI plugins and the agent see (K8S_POD_* in
// CNI_ARGS, the cgroup path the /proc scan parses).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lib/result.h"
#include "runtime_v1.grpc.pb.h"

namespace ambient::cri {

// A pod as kubelet describes it to the runtime.
struct PodSandboxSpec {
  std::string name, ns, uid;
  uint32_t attempt = 0;                       // kubelet counts the pod's sandboxes from 0
  std::map<std::string, std::string> labels;  // io.kubernetes.pod.* are added
  std::map<std::string, std::string> annotations;
  std::string hostname;       // empty: the pod's name
  std::string log_directory;  // kubelet: /var/log/pods/<ns>_<name>_<uid>
  // kubelet (cgroupfs driver): /kubepods/besteffort/pod<uid>; the runtime
  // puts the sandbox in <cgroup_parent>/<sandbox id>.
  std::string cgroup_parent;
  bool host_network = false;  // NODE network namespace: no CNI call
};

struct ContainerSpec {
  std::string name;
  std::string image;  // a reference the runtime has, e.g. localhost/ambient-test/busybox:1
  std::vector<std::string> command, args;
  std::map<std::string, std::string> env;
  uint32_t attempt = 0;
  std::string log_path;  // relative to the sandbox's log_directory; empty: <name>/<attempt>.log
  std::vector<std::string> add_capabilities;  // e.g. NET_ADMIN
  int64_t run_as_user = -1;                   // -1: the image's user
};

struct SandboxStatus {
  std::string id;
  bool ready = false;
  std::string ip;                // the pod's first IP, from the CNI result
  std::vector<std::string> ips;  // all of them
  int pid = 0;                   // the sandbox (pause) process, from the verbose info
  std::string netns_path;        // as the runtime passed it to CNI as CNI_NETNS
  std::map<std::string, std::string> info;
};

struct ContainerStatus {
  std::string id;
  runtime::v1::ContainerState state = runtime::v1::CONTAINER_UNKNOWN;
  int exit_code = 0;
  std::string reason, message, log_path;
};

struct ExecResult {
  int exit_code = -1;
  std::string out, err;
};

// kubelet's sandbox config for a pod (metadata, io.kubernetes.pod.* labels,
// hostname, log directory, cgroup parent, namespace options).
runtime::v1::PodSandboxConfig sandbox_config(const PodSandboxSpec& spec);
// kubelet's container config (metadata, io.kubernetes.container.name label,
// log path).
runtime::v1::ContainerConfig container_config(const ContainerSpec& spec);

class CriClient {
 public:
  // `socket_path`: the runtime's gRPC socket (unix). Each call fails after
  // `deadline` unless a call takes its own.
  explicit CriClient(const std::string& socket_path,
                     std::chrono::milliseconds deadline = std::chrono::seconds(60));

  const std::string& socket_path() const { return socket_path_; }
  // A new connection: after the runtime restarted, the old one may still be
  // backing off from the refused attempts.
  void reconnect();

  Result<runtime::v1::VersionResponse> version(std::chrono::milliseconds deadline);
  Result<runtime::v1::VersionResponse> version() { return version(deadline_); }

  // The sandbox ID. The runtime makes the netns and runs CNI ADD before it
  // answers.
  Result<std::string> run_pod_sandbox(const PodSandboxSpec& spec);
  Result<std::string> run_pod_sandbox(const runtime::v1::PodSandboxConfig& config);
  // CNI DEL with the netns; the sandbox stays (NOTREADY).
  Result<> stop_pod_sandbox(const std::string& id);
  // CNI DEL again (containerd 1.6: empty CNI_NETNS) and the sandbox is gone.
  Result<> remove_pod_sandbox(const std::string& id);
  Result<SandboxStatus> pod_sandbox_status(const std::string& id);
  Result<std::vector<runtime::v1::PodSandbox>> list_pod_sandbox();

  // The container ID. `sandbox` is the pod's config, as kubelet resends it.
  Result<std::string> create_container(const std::string& sandbox_id, const ContainerSpec& spec,
                                       const PodSandboxSpec& sandbox);
  Result<std::string> create_container(const std::string& sandbox_id,
                                       const runtime::v1::ContainerConfig& config,
                                       const runtime::v1::PodSandboxConfig& sandbox);
  Result<> start_container(const std::string& id);
  // The stop signal (SIGTERM), then SIGKILL after `grace`; 0: SIGKILL at once.
  Result<> stop_container(const std::string& id,
                          std::chrono::seconds grace = std::chrono::seconds(0));
  Result<> remove_container(const std::string& id);
  Result<ContainerStatus> container_status(const std::string& id);

  // Runs `argv` in the container and waits for it (at most `timeout`).
  Result<ExecResult> exec_sync(const std::string& container_id,
                               const std::vector<std::string>& argv,
                               std::chrono::seconds timeout = std::chrono::seconds(30));

  Result<std::vector<runtime::v1::Image>> list_images();

 private:
  std::string socket_path_;
  std::chrono::milliseconds deadline_;
  std::unique_ptr<runtime::v1::RuntimeService::Stub> runtime_;
  std::unique_ptr<runtime::v1::ImageService::Stub> images_;
};

}  // namespace ambient::cri
