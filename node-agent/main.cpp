// ambient-agent: wires the configuration to the real kernel, sockets and
// signals. The logic lives in src/.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "agent.h"
#include "config.h"
#include "http_server.h"
#include "k8s/controller.h"
#include "k8s/kube_client.h"
#include "log.h"
#include "redirect/iptables_backend.h"
#include "redirect/nftables_backend.h"
#include "zds/zds_server.h"

namespace {

using namespace ambient;
namespace asio = boost::asio;

std::string metrics_text(const agent::Agent& a, const zds::ZdsServer& z) {
  const auto& m = a.metrics();
  std::string s;
  s += "# HELP istio_cni_plugin_requests_total CNI events handled by the agent.\n";
  s += "# TYPE istio_cni_plugin_requests_total counter\n";
  s += "istio_cni_plugin_requests_total{response_code=\"200\"} " + std::to_string(m.requests_200) +
       "\n";
  s += "istio_cni_plugin_requests_total{response_code=\"400\"} " + std::to_string(m.requests_400) +
       "\n";
  s += "istio_cni_plugin_requests_total{response_code=\"500\"} " + std::to_string(m.requests_500) +
       "\n";
  s += "# HELP ztunnel_connected Number of connected ztunnels.\n# TYPE ztunnel_connected gauge\n";
  s += "ztunnel_connected " + std::to_string(z.connected()) + "\n";
  s += "# HELP ambient_enrolled_pods Pods currently enrolled by this agent.\n";
  s += "# TYPE ambient_enrolled_pods gauge\n";
  s += "ambient_enrolled_pods " + std::to_string(a.cache().size()) + "\n";
  return s;
}

int run(const agent::Config& cfg) {
  // Signals are taken synchronously on the main thread; every other thread
  // inherits the block. SIGPIPE would kill us when a peer goes away mid-write.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<redirect::RedirectBackend> backend;
  if (cfg.native_nftables) {
    if (!cfg.force_iptables_binary.empty()) {
      log::warn("Using native nftables and ignoring iptables (FORCE_IPTABLES_BINARY is set)");
    }
    backend = std::make_unique<redirect::NftablesBackend>();
    log::info("redirection backend: nftables (libnftables, in process)");
  } else {
    redirect::IptablesOptions iopts{.sandbox = cfg.scoped_xtables_locking};
    if (cfg.force_iptables_binary == "legacy") iopts.family = "iptables-legacy";
    if (cfg.force_iptables_binary == "nft") iopts.family = "iptables-nft";
    auto ipt = redirect::IptablesBackend::create(iopts);
    if (!ipt) {
      log::error("cannot set up the iptables backend: {}", ipt.error().describe());
      return 1;
    }
    backend = std::move(*ipt);
  }
  agent::Agent agent(cfg, *backend);

  // Standalone: a namespace list decides. Kubernetes: upstream's selectors
  // over informer caches, plus the controller for running pods.
  std::unique_ptr<agent::StandalonePolicy> standalone;
  std::unique_ptr<k8s::KubeClient> kube;
  std::unique_ptr<k8s::Controller> controller;
  if (cfg.standalone()) {
    standalone =
        std::make_unique<agent::StandalonePolicy>(cfg.enroll_namespaces, cfg.exclude_namespaces);
    agent.set_policy(standalone.get());
    log::info("standalone mode: namespaces to enroll come from --enroll-namespaces");
  } else {
    // Explicit kubeconfig, else the in-cluster service account, else the
    // kubeconfig the installer writes for the plugin.
    const std::string installer_kubeconfig = cfg.run_dir + "/istio-cni-kubeconfig";
    auto kc = !cfg.kubeconfig.empty()
                  ? k8s::load_kubeconfig(cfg.kubeconfig)
                  : k8s::in_cluster_config([](const char* n) { return std::getenv(n); });
    if (!kc && cfg.kubeconfig.empty() && std::filesystem::exists(installer_kubeconfig)) {
      kc = k8s::load_kubeconfig(installer_kubeconfig);
    }
    if (!kc) {
      log::error("cannot configure the Kubernetes client: {}", kc.error().describe());
      return 1;
    }
    auto selectors = k8s::parse_selector_yaml(cfg.enablement_selector_yaml);
    if (!selectors) {
      log::error("{}", selectors.error().describe());
      return 1;
    }
    if (selectors->empty()) log::warn("no enablement selectors: no pod will be enrolled");
    // The host netns identity is read here: failing to, the /proc scan
    // could claim the host's own netns for a pod.
    auto proc = netns::real_proc_scan_deps(cfg.host_root + "/proc", cfg.host_netns);
    if (!proc) {
      log::error("cannot set up the /proc netns scan: {}", proc.error().describe());
      return 1;
    }
    kube = std::make_unique<k8s::KubeClient>(std::move(*kc));
    log::info("kubernetes mode: API server {}, node {}", kube->config().server, cfg.node_name);
    controller = std::make_unique<k8s::Controller>(cfg, *kube, agent, std::move(*selectors),
                                                   std::move(*proc));
    agent.set_policy(controller.get());
    agent.set_listener(controller.get());
  }

  auto zds =
      zds::ZdsServer::start({.socket_path = cfg.ztunnel_uds,
                             .io_timeout = std::chrono::milliseconds(cfg.zds_timeout_ms),
                             .snapshot = [&agent] { return agent.snapshot(); },
                             // In Kubernetes mode ztunnel waits until the pod cache is rebuilt.
                             .accept_immediately = cfg.standalone()});
  if (!zds) {
    log::error("cannot start the ZDS server: {}", zds.error().describe());
    return 1;
  }
  agent.set_zds(zds->get());

  asio::io_context ioc;
  asio::thread_pool pool(16);  // CNI handlers block on netns work and ztunnel acks
  std::atomic<bool> ready{false};

  namespace fs = std::filesystem;
  const std::string sock_path = cfg.run_dir + "/" + std::string(cni::kPluginEventSocket);
  std::error_code ec;
  if (!fs::exists(cfg.run_dir)) {
    fs::create_directories(cfg.run_dir, ec);
    ::chmod(cfg.run_dir.c_str(), 0750);
  }
  fs::remove(sock_path, ec);
  std::optional<http::Server<asio::local::stream_protocol>> cni_server;
  std::optional<http::Server<asio::ip::tcp>> health_server, metrics_server;
  try {
    cni_server.emplace(
        ioc, pool, asio::local::stream_protocol::endpoint(sock_path),
        [&agent](const http::Request& r) { return agent.handle_cni(r); },
        http::Server<asio::local::stream_protocol>::Options{});
    ::chmod(sock_path.c_str(), 0666);  // the plugin runs as whatever the runtime runs
    health_server.emplace(
        ioc, pool, asio::ip::tcp::endpoint(asio::ip::address_v6::any(), cfg.health_port),
        [&](const http::Request& r) -> http::Response {
          if (r.target == "/healthz") return {200, "OK\n"};
          if (r.target == "/readyz") {
            return ready ? http::Response{200, "OK\n"}
                         : http::Response{503, "Service Unavailable\n"};
          }
          return {404, "404 page not found\n"};
        },
        http::Server<asio::ip::tcp>::Options{});
    if (cfg.monitoring_port > 0) {
      metrics_server.emplace(
          ioc, pool, asio::ip::tcp::endpoint(asio::ip::address_v6::any(), cfg.monitoring_port),
          [&](const http::Request& r) -> http::Response {
            if (r.target != "/metrics") return {404, "404 page not found\n"};
            return {200, metrics_text(agent, **zds), "text/plain; version=0.0.4"};
          },
          http::Server<asio::ip::tcp>::Options{});
    }
  } catch (const boost::system::system_error& e) {
    log::error("cannot listen: {}", e.what());
    return 1;
  }
  std::thread io([&] { ioc.run(); });
  // The CNI socket serves from here on (requests wait for the caches); the
  // controller's start blocks until the caches synced and pods are rebuilt.
  std::thread starter([&] {
    if (controller && !controller->start()) return;
    (*zds)->start_accepting();
    ready = true;  // CNI socket, caches and ZDS server are all up
    log::info("ambient-agent ready: cni socket {}, zds {}, health :{}", sock_path, cfg.ztunnel_uds,
              cfg.health_port);
  });

  int sig = 0;
  sigwait(&sigs, &sig);
  log::info("signal {}: shutting down (in-pod rules stay in place)", sig);
  ready = false;
  if (controller) {
    bool upgrade = controller->is_upgrade();
    log::info("shutdown kind: {}",
              upgrade ? "upgrade (leaving the plugin installed)" : "uninstall");
    controller->stop();
  }
  starter.join();
  asio::post(ioc, [&] {
    cni_server->close();
    health_server->close();
    if (metrics_server) metrics_server->close();
  });
  pool.join();
  ioc.stop();
  io.join();
  fs::remove(sock_path, ec);
  zds->reset();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = agent::parse_config(argc, argv, [](const char* n) { return std::getenv(n); });
  if (!parsed) {
    std::cerr << "ambient-agent: " << parsed.error().describe() << "\n";
    return 2;
  }
  if (parsed->help) {
    std::cout << agent::help_text();
    return 0;
  }
  log::init(parsed->config.log_level);
  return run(parsed->config);
}
