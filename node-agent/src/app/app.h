// The composition root of ambient-agent: builds every part from the
// configuration (redirection backend, host probe set-up, the enrollment
// source, ZDS, the agent, the installer, the sockets it serves), serves
// until SIGTERM or SIGINT, and shuts down (docs/node-agent.md#startup-order).
#pragma once

#include <signal.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "admin/agent_source.h"
#include "admin/self_check.h"
#include "admin/server.h"
#include "agent/agent.h"
#include "agent/standalone_store.h"
#include "cni_server/cni_handler.h"
#include "config/config.h"
#include "http/server.h"
#include "install/installer.h"
#include "k8s/controller.h"
#include "k8s/kube_client.h"
#include "metrics/agent_metrics.h"
#include "redirect/factory.h"
#include "zds/zds_server.h"

namespace ambient::app {

// A thread joined when it goes out of scope.
struct JoinedThread {
  std::thread t;
  JoinedThread() = default;
  JoinedThread(JoinedThread&&) = default;
  JoinedThread& operator=(JoinedThread&&) = default;
  ~JoinedThread() { join(); }
  void join() {
    if (t.joinable()) t.join();
  }
};

class App {
 public:
  // Errors name the step that failed; nothing is left serving.
  static Result<std::unique_ptr<App>> build(const agent::Config& cfg);
  ~App();
  App(const App&) = delete;
  App& operator=(const App&) = delete;

  // Serves until one of `signals` (blocked in every thread) arrives, then
  // shuts down: in-pod rules stay; an uninstall also removes the installed
  // plugin and the host rules. Returns the process's exit code.
  int run(const sigset_t& signals);

 private:
  explicit App(const agent::Config& cfg) : cfg_(cfg) {}
  Result<> build_redirection();
  Result<> build_enrollment();
  Result<> build_agent();
  Result<> listen();
  http::Response health(const http::Request& r) const;
  void start_threads();
  void start_admin();
  void post_pod_event(const agent::EnrolledPod& p, const std::string& message);
  void shut_down();

  using LocalServer = http::Server<boost::asio::local::stream_protocol>;
  using TcpServer = http::Server<boost::asio::ip::tcp>;

  const agent::Config& cfg_;
  metrics::AgentMetrics metrics_;  // before the components that update it, so it outlives them
  std::string backend_info_;       // "nftables (why)", for logs and /readyz
  std::string host_detail_;        // how kubelet's probes are told apart, for /readyz
  redirect::Redirectors redirect_;
  std::shared_ptr<redirect::ebpf::Programs> ebpf_programs_;  // set when pods get eBPF
  // The node's netns, for host-side work and `trace` (null: the agent's own).
  netns::NetnsRef host_netns_;
  JoinedThread diagnostics_;  // checks that only warn, beside the start-up
  agent::PodCache pods_;
  admin::EventHub events_;           // the admin API's event stream
  admin::Journal journal_{events_};  // enrollment times and failures, for the admin API
  std::unique_ptr<zds::ZdsServer> zds_;
  std::optional<agent::StandalonePolicy> standalone_;
  std::unique_ptr<agent::StandaloneStore> store_;  // standalone mode's enrollments on disk
  std::unique_ptr<k8s::KubeClient> kube_;
  std::unique_ptr<k8s::Controller> controller_;
  std::unique_ptr<agent::Agent> agent_;
  std::unique_ptr<cni_server::CniHandler> cni_;
  std::unique_ptr<install::Installer> installer_;

  boost::asio::io_context ioc_;
  boost::asio::thread_pool pool_{16};  // CNI handlers block on netns work and ztunnel acks
  std::string cni_socket_, log_socket_;
  std::optional<LocalServer> cni_server_, log_server_;
  std::optional<TcpServer> health_server_, metrics_server_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> install_stop_{false};
  JoinedThread io_, installer_thread_, starter_;
  // Last, so it stops first: it reads every part above.
  std::unique_ptr<admin::AgentSource> admin_source_;
  std::unique_ptr<admin::SelfCheck> self_check_;  // repairs through agent_
  std::unique_ptr<admin::AdminServer> admin_;     // reads self_check_'s counter
};

}  // namespace ambient::app
