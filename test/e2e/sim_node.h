// A simulated Kubernetes node for end-to-end tests: a network namespace
// that plays the host (so nothing touches the real host's network), the
// reference CNI chain (libcni driver + bridge + host-local + istio-cni),
// the real agent and the ztunnel emulator, all inside it. Pods are network
// namespaces created by the test. Everything is named with a per-run
// suffix and torn down by the destructor, also when a test fails.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "netns/netns.h"
#include "nlohmann/json.hpp"
#include "result.h"

namespace ambient::test {

// A background process owned by the test: SIGTERM, then SIGKILL, then reaped.
class BgProcess {
 public:
  BgProcess(std::vector<std::string> argv, const std::string& log_path);
  ~BgProcess();
  BgProcess(const BgProcess&) = delete;
  BgProcess& operator=(const BgProcess&) = delete;
  void stop();
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

struct Pod {
  std::string name, ns, uid, netns_name, netns_path, container_id;
  std::string ip;  // from the CNI result
};

struct AddResult {
  bool ok = false;
  nlohmann::json output;  // the CNI result, or the error object
  std::string stderr_text;
};

struct NodeOptions {
  std::vector<std::string> enroll_namespaces = {"ambient-demo"};
  std::vector<std::string> exclude_namespaces = {"kube-system"};
  bool dns_capture = true;
  bool start_ztunnel = true;
};

class SimNode {
 public:
  explicit SimNode(NodeOptions opts = {});
  ~SimNode();

  const std::string& id() const { return id_; }
  const std::string& dir() const { return dir_; }
  std::string node_netns() const { return "amb-" + id_ + "-node"; }
  std::string agent_socket() const { return dir_ + "/run/pluginevent.sock"; }
  std::string gateway() const { return "10.248.0.1"; }

  void start_agent();
  void stop_agent();
  void start_ztunnel();
  void stop_ztunnel();
  // Waits until the emulator has taken the snapshot (state file).
  void wait_ztunnel_ready();

  // Creates the pod netns and runs CNI ADD through the chain.
  AddResult add_pod(const std::string& name, const std::string& ns, Pod* out);
  Pod must_add_pod(const std::string& name, const std::string& ns);
  AddResult del_pod(const Pod& p);

  // Runs `argv` inside the node netns; returns stdout, fails the test on error.
  std::string node_exec(const std::vector<std::string>& argv);
  // Whole iptables-save text of a pod, and whether it holds any of our state.
  std::string pod_iptables(const Pod& p);
  bool pod_has_our_rules(const Pod& p);

  // The emulator's records and state.
  std::vector<nlohmann::json> records();
  nlohmann::json ztunnel_state();
  std::string agent_log();

 private:
  std::string cni(const std::string& op, const Pod& p, AddResult* res);

  NodeOptions opts_;
  std::string id_, dir_;
  std::optional<BgProcess> agent_, ztunnel_;
  std::vector<Pod> pods_;
  std::vector<std::string> netns_names_;
};

// Runs fn inside a pod's netns on a dedicated thread.
Result<> in_pod(const Pod& p, const std::function<Result<>()>& fn);

// TCP connect to ip:port (optionally with SO_MARK), read one line.
Result<std::string> tcp_exchange(const std::string& ip, int port, unsigned mark = 0);
// UDP send to ip:port, wait for one datagram back.
Result<std::string> udp_exchange(const std::string& ip, int port);

}  // namespace ambient::test
