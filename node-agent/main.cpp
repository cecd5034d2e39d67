// ambient-agent: wires the configuration to the real kernel, sockets and
// signals. The logic lives in src/.
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "agent/agent.h"
#include "config/config.h"
#include "http/server.h"
#include "install/installer.h"
#include "k8s/controller.h"
#include "k8s/kube_client.h"
#include "log/log.h"
#include "process/fd_table.h"
#include "redirect/detect.h"
#include "redirect/iptables/backend.h"
#include "redirect/iptables/host.h"
#include "redirect/kubelet_uid.h"
#include "redirect/nftables/backend.h"
#include "redirect/nftables/host.h"
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
  s += "# HELP ambient_cmdadd_duration_seconds Time to answer the plugin's /cmdadd.\n";
  s += "# TYPE ambient_cmdadd_duration_seconds histogram\n";
  s += m.cmdadd.render("ambient_cmdadd_duration_seconds");
  s += "# HELP ambient_enroll_phase_duration_seconds Enrollment time by phase.\n";
  s += "# TYPE ambient_enroll_phase_duration_seconds histogram\n";
  s += m.decision.render("ambient_enroll_phase_duration_seconds", "phase=\"decision\"");
  s += m.netns_open.render("ambient_enroll_phase_duration_seconds", "phase=\"netns\"");
  s += m.rules.render("ambient_enroll_phase_duration_seconds", "phase=\"rules\"");
  s += m.zds_add.render("ambient_enroll_phase_duration_seconds", "phase=\"zds\"");
  s += m.probe_set.render("ambient_enroll_phase_duration_seconds", "phase=\"probe_set\"");
  s += m.parse.render("ambient_enroll_phase_duration_seconds", "phase=\"parse\"");
  const auto& zm = z.metrics();
  s += "# HELP ambient_zds_round_trip_duration_seconds ZDS message sent to ztunnel's ack.\n";
  s += "# TYPE ambient_zds_round_trip_duration_seconds histogram\n";
  s += zm.add.render("ambient_zds_round_trip_duration_seconds", "op=\"add\"");
  s += zm.del.render("ambient_zds_round_trip_duration_seconds", "op=\"del\"");
  s += zm.keep.render("ambient_zds_round_trip_duration_seconds", "op=\"keep\"");
  s += zm.snapshot_sent.render("ambient_zds_round_trip_duration_seconds", "op=\"snapshot_sent\"");
  return s;
}

// Creates (and empties) the probe sets and installs the probe SNAT rule,
// retried as upstream does (11 attempts, 2 s apart).
Result<> setup_host(const agent::Config& cfg, redirect::HostRedirect& host) {
  redirect::HostProbeConfig hcfg{
      .ipv6 = cfg.ipv6, .snat_v4 = cfg.probe_snat_ipv4, .snat_v6 = cfg.probe_snat_ipv6};
  bool rules = true;
  if (cfg.kubelet_uid >= 0) {
    hcfg.kubelet_uid = static_cast<uid_t>(cfg.kubelet_uid);
  } else if (auto uid = redirect::find_kubelet_uid(cfg.host_root + "/proc")) {
    hcfg.kubelet_uid = *uid;
  } else {
    // Matching every host socket instead (upstream's --socket-exists) would
    // SNAT all host traffic to pods (lesson P12): no rule is safer.
    log::warn("no kubelet process found ({}): no probe SNAT rule; set --kubelet-uid",
              uid.error().describe());
    rules = false;
  }
  Result<> last;
  for (int attempt = 0; attempt < 11; ++attempt) {
    if (attempt) std::this_thread::sleep_for(std::chrono::seconds(2));
    last = host.ensure_sets(cfg.ipv6);
    if (last) last = host.flush_sets();
    if (last && rules) last = host.install_rules(hcfg);
    if (last) {
      if (rules) log::info("host probe SNAT for UID {} via {}", hcfg.kubelet_uid, host.name());
      return {};
    }
    log::warn("host rules attempt {}: {}", attempt + 1, last.error().describe());
  }
  return last;
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

  // The backend is chosen once per boot (persisted in the run dir), by
  // reading state only: detection never creates tables (lesson P19).
  const redirect::DetectOptions detect_opts{.run_dir = cfg.run_dir,
                                            .native_nftables = cfg.native_nftables,
                                            .force_iptables_binary = cfg.force_iptables_binary,
                                            .defer_host_report = true};
  auto detection = redirect::detect_backend(detect_opts);
  if (!detection) {
    log::error("cannot choose a redirection backend: {}", detection.error().describe());
    return 1;
  }
  const std::string backend_info =
      std::string(redirect::backend_name(detection->kind)) + " (" + detection->reason + ")";
  log::info("redirection backend: {}", backend_info);
  for (const auto& w : detection->warnings) log::warn("backend detection: {}", w);
  for (const auto& l : detection->leftovers) {
    log::warn("leftover state of another backend (not used, not removed): {}", l);
  }
  // Checks that only warn read the host with several commands (tens of ms
  // on a slow node): they run beside the start-up, not before it.
  struct Joined {
    std::thread t;
    ~Joined() {
      if (t.joinable()) t.join();
    }
  } diagnostics;
  diagnostics.t = std::thread(
      [detect_opts, kind = detection->kind, deferred = detection->host_report_deferred] {
        if (deferred) (void)redirect::report_host_state(detect_opts, kind);
        if (kind != redirect::BackendKind::Nftables) return;
        // It logs what it finds itself.
        if (auto compat = redirect::check_host_nft_compat(); !compat) {
          log::warn("nft compatibility (P24) not checked: {}", compat.error().describe());
        }
      });
  std::unique_ptr<redirect::RedirectBackend> backend;
  std::unique_ptr<redirect::HostRedirect> host;
  if (detection->kind == redirect::BackendKind::Nftables) {
    backend = std::make_unique<redirect::NftablesBackend>();
    host = std::make_unique<redirect::NftablesHostRedirect>();
  } else {
    redirect::IptablesOptions iopts{
        .family = detection->kind == redirect::BackendKind::IptablesLegacy ? "iptables-legacy"
                                                                           : "iptables-nft",
        .sandbox = cfg.scoped_xtables_locking};
    auto ipt = redirect::IptablesBackend::create(iopts);
    auto hipt = redirect::IptablesHostRedirect::create(iopts);
    if (!ipt || !hipt) {
      log::error("cannot set up the iptables backend: {}",
                 !ipt ? ipt.error().describe() : hipt.error().describe());
      return 1;
    }
    backend = std::move(*ipt);
    host = std::move(*hipt);
  }
  // Host side: the probe sets, and the SNAT rule for kubelet's probes.
  if (auto r = setup_host(cfg, *host); !r) {
    log::error("error initializing the host rules for health checks: {}", r.error().describe());
    return 1;
  }
  agent::Agent agent(cfg, *backend);
  agent.set_host(host.get());

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

  // The installer: plugin binary, kubeconfig and CNI config entry on the node.
  std::unique_ptr<install::Installer> installer;
  std::atomic<bool> install_stop{false};
  if (cfg.installer_enabled()) {
    auto selectors_json = k8s::selector_yaml_to_json(cfg.enablement_selector_yaml);
    if (!selectors_json) {
      log::error("{}", selectors_json.error().describe());
      return 1;
    }
    auto env = [](const char* n) {
      const char* v = std::getenv(n);
      return std::string(v ? v : "");
    };
    install::InstallerConfig icfg{
        .cni_net_dir = cfg.cni_net_dir,
        .cni_conf_name = cfg.cni_conf_name,
        .chained = cfg.chained_cni_plugin,
        .istio_owned = cfg.istio_owned_cni_config && cfg.chained_cni_plugin,
        .istio_owned_filename = cfg.istio_owned_cni_config_filename.empty()
                                    ? "02-istio-cni.conflist"
                                    : cfg.istio_owned_cni_config_filename,
        .bin_source_dir = cfg.cni_bin_source_dir,
        .bin_target_dirs = {cfg.cni_bin_dir},
        .run_dir = cfg.run_dir,
        .kubeconfig_mode = static_cast<mode_t>(cfg.kubeconfig_mode),
        .conf_group_read = cfg.cni_conf_group_read,
        .sa_dir = cfg.service_account_dir,
        .kube_ca_file = cfg.kube_ca_file,
        .skip_tls_verify = cfg.skip_tls_verify,
        .k8s_protocol = env("KUBERNETES_SERVICE_PROTOCOL").empty()
                            ? "https"
                            : env("KUBERNETES_SERVICE_PROTOCOL"),
        .k8s_host = env("KUBERNETES_SERVICE_HOST"),
        .k8s_port = env("KUBERNETES_SERVICE_PORT"),
        .write_kubeconfig = !cfg.standalone(),
        .entry =
            install::plugin_entry(true, cfg.run_dir, install::Json::parse(selectors_json->dump()),
                                  cfg.exclude_namespaces, cfg.pod_namespace, cfg.native_nftables,
                                  cfg.enable_ambient_detection_retry, cfg.plugin_log_level)};
    installer = std::make_unique<install::Installer>(std::move(icfg));
  }

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
            // Ready only when both halves are: the agent, and the installer
            // with our entry in place.
            return ready && (!installer || installer->ready())
                       ? http::Response{200, "OK\nbackend: " + backend_info + "\n"}
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
  std::thread installer_thread([&] {
    if (!installer) return;
    if (auto r = installer->run(install_stop); !r)
      log::error("installer: {}", r.error().describe());
  });
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
  bool upgrade = false;
  if (controller) {
    upgrade = controller->is_upgrade();
    log::info("shutdown kind: {}",
              upgrade ? "upgrade (leaving the plugin installed)" : "uninstall");
    controller->stop();
  }
  install_stop = true;
  installer_thread.join();
  if (!upgrade && installer) {
    if (auto r = installer->cleanup(); !r)
      log::warn("{}", r.error().describe());
    else
      log::info("installer: removed our CNI config entry, kubeconfig and plugin binary");
  }
  if (!upgrade) {
    // Uninstall: the host-side rules and sets go; in-pod rules stay.
    if (auto r = host->remove_rules(); !r) log::warn("remove host rules: {}", r.error().describe());
    if (auto r = host->destroy_sets(); !r)
      log::warn("destroy probe sets: {}", r.error().describe());
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
  // Before any thread exists: each enrolled pod holds a netns fd.
  reserve_fd_table(4096);
  // glibc gives each busy thread its own malloc arena (up to 8 per core),
  // and memory freed in one is not returned to the kernel nor reused by
  // another: after a burst of enrollments that held ~40 MiB of RSS. Our
  // threads mostly block in syscalls, so two arenas cost no contention.
  ::mallopt(M_ARENA_MAX, 2);
  // Fixed thresholds: glibc would otherwise raise both after the first big
  // block is freed (up to 32 MiB), and then keep up to twice that per arena
  // between enrollments. 4 MiB keeps libnftables' 2 MiB batch buffer, made
  // for every transaction, on the heap: mmap'd, its munmap costs a TLB
  // shootdown each time (check and transaction ~25 % slower). The heap is
  // trimmed once nft work pauses instead (redirect/nft.cpp).
  ::mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
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
  log::info("ambient-agent starting (pid {})", ::getpid());
  return run(parsed->config);
}
