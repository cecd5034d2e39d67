#include "app/app.h"

#include <sys/stat.h>

#include <unistd.h>

#include <filesystem>

#include "app/host_setup.h"
#include "app/installer_setup.h"
#include "http/root_only.h"
#include "lib/cni_event.h"
#include "log/log.h"
#include "log/plugin_log.h"
#include "netns/proc_scan.h"
#include "redirect/detect.h"
#include "redirect/host_netns.h"
#include "redirect/nftables/compat.h"

namespace ambient::app {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

// Explicit kubeconfig, else the in-cluster service account, else the
// kubeconfig the installer writes for the plugin.
Result<k8s::KubeConfig> agent_kubeconfig(const agent::Config& cfg) {
  if (!cfg.kubeconfig.empty()) return k8s::load_kubeconfig(cfg.kubeconfig);
  auto kc = k8s::in_cluster_config(cfg.kubernetes_service_host, cfg.kubernetes_service_port);
  if (!kc && fs::exists(cfg.plugin_kubeconfig_path())) {
    kc = k8s::load_kubeconfig(cfg.plugin_kubeconfig_path());
  }
  return kc;
}

// Checks that only warn read the host with several commands (tens of ms on
// a slow node): they run beside the start-up, not before it.
JoinedThread start_diagnostics(const redirect::DetectOptions& opts,
                               const redirect::Detection& detection, const netns::NetnsRef& host) {
  JoinedThread t;
  t.t = std::thread([opts, host, kind = detection.kind, deferred = detection.host_report_deferred] {
    if (deferred) {
      auto report = [&]() -> Result<> {
        (void)redirect::report_host_state(opts, kind);
        return {};
      };
      if (auto r = host ? netns::run_in_netns(*host, report) : report(); !r) {
        log::warn("host state not read: {}", r.error().describe());
      }
    }
    if (kind != redirect::BackendKind::Nftables) return;
    // It logs what it finds itself.
    if (auto compat = redirect::check_host_nft_compat(); !compat) {
      log::warn("host nft compatibility not checked: {}", compat.error().describe());
    }
  });
  return t;
}

// Creates the run dir 0750 as upstream does; one that exists and is ours
// (owned by our user) is tightened to at most 0750. A dir owned by someone
// else is left as it is, with a warning: it may be shared with other tools.
Result<> prepare_run_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(Errc::Unavailable, "create run dir " + dir + ": " + ec.message());
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return sys_error("stat run dir " + dir);
  if (!S_ISDIR(st.st_mode)) {
    return make_error(Errc::InvalidArgument, "run dir " + dir + " is not a directory");
  }
  if (st.st_uid != ::geteuid()) {
    log::warn("run dir {} belongs to uid {}, not us: its mode {:o} is left as it is", dir,
              st.st_uid, st.st_mode & 07777);
    return {};
  }
  if ((st.st_mode & 07777 & ~0750) != 0 && ::chmod(dir.c_str(), st.st_mode & 0750) != 0) {
    return sys_error("chmod 0750 run dir " + dir);
  }
  return {};
}

// The node's netns for host-side work, or null when that work happens in the
// agent's own netns: ALLOW_SWITCH_TO_HOST_NS is off, or the agent shares
// the node's netns already (hostNetwork).
Result<netns::NetnsRef> node_netns(const agent::Config& cfg) {
  if (!cfg.allow_switch_to_host_ns) return netns::NetnsRef();
  const std::string path = cfg.host_netns_path();
  auto node = netns::Netns::open(path);
  if (!node) {
    return std::move(node).error().context(
        "open the node's netns for host-side work (ALLOW_SWITCH_TO_HOST_NS)");
  }
  auto own = netns::Netns::open("/proc/self/ns/net");
  if (own && own->device() == node->device() && own->inode() == node->inode()) {
    log::info("host-side work: the agent shares the node's netns ({})", path);
    return netns::NetnsRef();
  }
  log::info("host-side work (probe sets, probe SNAT, host rules) in the node's netns {}", path);
  return std::make_shared<const netns::Netns>(std::move(*node));
}

}  // namespace

Result<std::unique_ptr<App>> App::build(const agent::Config& cfg) {
  std::unique_ptr<App> app(new App(cfg));
  AMBIENT_RETURN_IF_ERROR(app->build_redirection());
  AMBIENT_RETURN_IF_ERROR(app->build_enrollment());
  AMBIENT_RETURN_IF_ERROR(app->build_agent());
  // Before the CNI socket serves: a DEL for a stored pod cannot slip in
  // between its check and its adoption (docs/node-agent.md#standalone-mode).
  if (app->store_) agent::restore_enrollments(*app->store_, *app->agent_, cfg.reconcile_on_startup);
  AMBIENT_RETURN_IF_ERROR(app->listen());
  return app;
}

App::~App() {
  // Whatever was started is stopped in reverse order by the members'
  // destructors; the servers must close before the pool can drain.
  if (controller_) controller_->stop();
  install_stop_ = true;
}

// The backend is chosen once per boot (persisted in the run dir), by
// reading state only: detection never creates tables
// (docs/field-lessons.md#p19).
Result<> App::build_redirection() {
  AMBIENT_ASSIGN_OR_RETURN(netns::NetnsRef host, node_netns(cfg_));
  const redirect::DetectOptions opts{.run_dir = cfg_.run_dir,
                                     .native_nftables = cfg_.native_nftables,
                                     .force_iptables = cfg_.force_iptables,
                                     .defer_host_report = true};
  // Detection reads the node's rules, so it runs where they are.
  std::optional<Result<redirect::Detection>> detected;
  auto detect = [&]() -> Result<> {
    detected.emplace(redirect::detect_backend(opts));
    return {};
  };
  AMBIENT_RETURN_IF_ERROR(host ? netns::run_in_netns(*host, detect) : detect());
  auto detection = std::move(*detected);
  if (!detection) return std::move(detection).error().context("choose a redirection backend");
  backend_info_ =
      std::string(redirect::backend_name(detection->kind)) + " (" + detection->reason + ")";
  log::info("redirection backend: {}", backend_info_);
  for (const auto& w : detection->warnings) log::warn("backend detection: {}", w);
  for (const auto& l : detection->leftovers) {
    log::warn("leftover state of another backend (not used, not removed): {}", l);
  }
  diagnostics_ = start_diagnostics(opts, *detection, host);
  auto made = redirect::make_redirectors(*detection, cfg_.scoped_xtables_locking);
  if (!made) return std::move(made).error().context("set up the " + backend_info_ + " backend");
  redirect_ = std::move(*made);
  if (host) {
    redirect_.host = std::make_unique<redirect::HostInNetns>(std::move(redirect_.host), host);
  }
  auto probes = setup_host(cfg_, *redirect_.host);
  if (!probes) {
    return std::move(probes).error().context("error initializing the host rules for health checks");
  }
  host_detail_ = std::move(*probes);
  return {};
}

// Standalone: a namespace list decides. Kubernetes: upstream's selectors
// over informer caches, plus the controller for running pods.
Result<> App::build_enrollment() {
  if (cfg_.standalone()) {
    standalone_.emplace(cfg_.enroll_namespaces, cfg_.exclude_namespaces);
    store_ = std::make_unique<agent::StandaloneStore>(
        cfg_.run_dir + "/" + std::string(agent::kStandaloneStoreFile),
        std::string(agent::kBootIdPath), metrics_.store_write_failures());
    log::info("standalone mode: namespaces to enroll come from --enroll-namespaces");
    return {};
  }
  auto kc = agent_kubeconfig(cfg_);
  if (!kc) return std::move(kc).error().context("configure the Kubernetes client");
  AMBIENT_ASSIGN_OR_RETURN(auto selectors, k8s::parse_selector_yaml(cfg_.enablement_selector_yaml));
  if (selectors.empty()) log::warn("no enablement selectors: no pod will be enrolled");
  // The host netns identity is read here: failing to, the /proc scan
  // could claim the host's own netns for a pod.
  auto proc = netns::real_proc_scan_deps(cfg_.host_root + "/proc", cfg_.host_netns);
  if (!proc) return std::move(proc).error().context("set up the /proc netns scan");
  kube_ = std::make_unique<k8s::KubeClient>(std::move(*kc));
  log::info("kubernetes mode: API server {}, node {}", kube_->config().server, cfg_.node_name);
  controller_ = std::make_unique<k8s::Controller>(cfg_, *kube_, std::move(selectors),
                                                  std::move(*proc), metrics_.reconcile());
  return {};
}

Result<> App::build_agent() {
  auto zds = zds::ZdsServer::start({.socket_path = cfg_.ztunnel_uds,
                                    .io_timeout = std::chrono::milliseconds(cfg_.zds_timeout_ms),
                                    .snapshot = [this] { return pods_.workloads(); },
                                    // ztunnel waits until the pod cache is rebuilt.
                                    .accept_immediately = false,
                                    .metrics = metrics_.zds()});
  if (!zds) return std::move(zds).error().context("start the ZDS server");
  zds_ = std::move(*zds);
  metrics_.set_scrape_sources(
      {.ztunnel_connected = [this] { return static_cast<double>(zds_->connected()); },
       .enrolled_pods = [this] { return static_cast<double>(pods_.size()); }});
  const agent::EnrollmentPolicy& policy =
      controller_ ? static_cast<const agent::EnrollmentPolicy&>(*controller_) : *standalone_;
  agent_ = std::make_unique<agent::Agent>(agent::AgentDeps{.config = cfg_,
                                                           .backend = *redirect_.backend,
                                                           .host = *redirect_.host,
                                                           .zds = *zds_,
                                                           .pods = pods_,
                                                           .policy = policy,
                                                           .listener = controller_.get(),
                                                           .store = store_.get(),
                                                           .metrics = metrics_.enroll()});
  cni_ = std::make_unique<cni_server::CniHandler>(*agent_, metrics_.cni());
  // The installer: plugin binary, kubeconfig and CNI config entry on the node.
  if (cfg_.installer_enabled()) {
    AMBIENT_ASSIGN_OR_RETURN(auto icfg, installer_config(cfg_));
    installer_ = std::make_unique<install::Installer>(std::move(icfg), metrics_.installer());
  }
  return {};
}

// Only root reaches the plugin's socket: the run dir is 0750 (an existing
// one of ours is tightened), the socket 0600, and the peer is checked.
Result<> App::listen() {
  cni_socket_ = cfg_.run_dir + "/" + std::string(cni::kPluginEventSocket);
  AMBIENT_RETURN_IF_ERROR(prepare_run_dir(cfg_.run_dir));
  std::error_code ec;
  fs::remove(cni_socket_, ec);
  log_socket_ = cfg_.run_dir + "/" + std::string(cni::kPluginLogSocket);
  fs::remove(log_socket_, ec);
  const auto any = asio::ip::address_v6::any();
  try {
    // The plugin's lines (docs/node-agent.md#plugin-logs). 0666 as upstream
    // has it: the 0750 run dir and the peer check are what keep others out.
    log_server_.emplace(
        ioc_, pool_, asio::local::stream_protocol::endpoint(log_socket_), log::handle_plugin_log,
        LocalServer::Options{.body_limit = log::kPluginLogBodyLimit,
                             .too_large_status = 413,
                             .admit = http::root_only(std::string(cni::kPluginLogSocket))});
    ::chmod(log_socket_.c_str(), 0666);
    cni_server_.emplace(
        ioc_, pool_, asio::local::stream_protocol::endpoint(cni_socket_),
        [this](const http::Request& r) { return cni_->handle(r); },
        LocalServer::Options{.admit = http::root_only(std::string(cni::kPluginEventSocket))});
    ::chmod(cni_socket_.c_str(), 0600);
    health_server_.emplace(
        ioc_, pool_, asio::ip::tcp::endpoint(any, cfg_.health_port),
        [this](const http::Request& r) { return health(r); }, TcpServer::Options{});
    if (cfg_.monitoring_port > 0) {
      metrics_server_.emplace(
          ioc_, pool_, asio::ip::tcp::endpoint(any, cfg_.monitoring_port),
          [this](const http::Request& r) -> http::Response {
            if (r.target != "/metrics") return {404, "404 page not found\n"};
            return {200, metrics_.serialize(), metrics::kTextContentType};
          },
          TcpServer::Options{});
    }
  } catch (const boost::system::system_error& e) {
    return make_error(Errc::Unavailable, std::string("cannot listen: ") + e.what());
  }
  return {};
}

// Ready only when both halves are: the agent, and the installer with our
// entry in place.
http::Response App::health(const http::Request& r) const {
  if (r.target == "/healthz") return {200, "OK\n"};
  if (r.target != "/readyz") return {404, "404 page not found\n"};
  if (ready_ && (!installer_ || installer_->ready())) {
    return {200, "OK\nbackend: " + backend_info_ + "\nprobe SNAT: " + host_detail_ + "\n"};
  }
  return {503, "Service Unavailable\n"};
}

void App::start_threads() {
  io_.t = std::thread([this] { ioc_.run(); });
  installer_thread_.t = std::thread([this] {
    if (!installer_) return;
    if (auto r = installer_->run(install_stop_); !r) {
      log::install().error("{}", r.error().describe());
    }
  });
  // The CNI socket serves from here on (requests wait for the caches); the
  // controller's start blocks until the caches synced and pods are rebuilt.
  starter_.t = std::thread([this] {
    if (controller_ && !controller_->start(*agent_)) return;
    zds_->start_accepting();
    ready_ = true;  // CNI socket, caches and ZDS server are all up
    log::info("ambient-agent ready: cni socket {}, zds {}, health :{}", cni_socket_,
              cfg_.ztunnel_uds, cfg_.health_port);
  });
}

int App::run(const sigset_t& signals) {
  start_threads();
  int sig = 0;
  sigwait(&signals, &sig);
  log::info("signal {}: shutting down (in-pod rules stay in place)", sig);
  shut_down();
  return 0;
}

void App::shut_down() {
  ready_ = false;
  bool upgrade = false;
  if (controller_) {
    upgrade = controller_->is_upgrade();
    log::info("shutdown kind: {}",
              upgrade ? "upgrade (leaving the plugin installed)" : "uninstall");
    controller_->stop();
  }
  install_stop_ = true;
  installer_thread_.join();
  if (!upgrade && installer_) {
    if (auto r = installer_->cleanup(); !r) {
      log::warn("{}", r.error().describe());
    } else {
      log::install().info("removed our CNI config entry, kubeconfig and plugin binary");
    }
  }
  if (!upgrade) teardown_host(*redirect_.host);
  starter_.join();
  asio::post(ioc_, [this] {
    cni_server_->close();
    log_server_->close();
    health_server_->close();
    if (metrics_server_) metrics_server_->close();
  });
  pool_.join();
  ioc_.stop();
  io_.join();
  std::error_code ec;
  fs::remove(cni_socket_, ec);
  fs::remove(log_socket_, ec);
  zds_.reset();
}

}  // namespace ambient::app
