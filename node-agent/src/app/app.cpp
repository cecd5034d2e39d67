#include "app/app.h"

#include <sys/stat.h>

#include <unistd.h>

#include <filesystem>

#include "agent/pod_config.h"
#include "app/host_setup.h"
#include "app/installer_setup.h"
#include "http/root_only.h"
#include "install/safe_write.h"
#include "lib/cni_event.h"
#include "log/log.h"
#include "log/plugin_log.h"
#include "netns/proc_scan.h"
#include "redirect/detect.h"
#include "redirect/ebpf/gate.h"
#include "redirect/ebpf/tw_link.h"
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

redirect::EbpfRequest ebpf_request(agent::Tristate t) {
  switch (t) {
    case agent::Tristate::On:
      return redirect::EbpfRequest::On;
    case agent::Tristate::Auto:
      return redirect::EbpfRequest::Auto;
    case agent::Tristate::Off:
      break;
  }
  return redirect::EbpfRequest::Off;
}

// The eBPF programs' counters by name; empty without eBPF.
std::function<Result<std::vector<std::pair<std::string, double>>>()> ebpf_decisions(
    const std::shared_ptr<redirect::ebpf::Programs>& programs) {
  if (!programs) return {};
  return [programs]() -> Result<std::vector<std::pair<std::string, double>>> {
    AMBIENT_ASSIGN_OR_RETURN(auto counters, programs->counters());
    std::vector<std::pair<std::string, double>> out;
    for (size_t i = 0; i < counters.size(); ++i) {
      out.emplace_back(redirect::ebpf::counter_name(static_cast<amb_counter>(i)),
                       static_cast<double>(counters[i]));
    }
    return out;
  };
}

// How many pods eBPF moved to the rules; unset without eBPF.
std::function<double()> ebpf_rules_pods(const std::shared_ptr<redirect::ebpf::Programs>& programs) {
  if (!programs) return {};
  return [dir = programs->link_dir()] {
    return static_cast<double>(redirect::ebpf::count_rules_markers(dir));
  };
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
  host_netns_ = host;
  // The gate loads the programs once; the backend reuses them.
  std::shared_ptr<redirect::ebpf::Programs> programs;
  const redirect::DetectOptions opts{
      .run_dir = cfg_.run_dir,
      .native_nftables = cfg_.native_nftables,
      .force_iptables = cfg_.force_iptables,
      .defer_host_report = true,
      .ebpf = ebpf_request(cfg_.ebpf_redirection),
      .ebpf_gate = [&programs, this] {
        // This node's agent, whichever process: a restart adopts the
        // programs and maps an earlier one left in the pods.
        redirect::ebpf::GateResult g =
            redirect::ebpf::check_gate(cfg_.node_name + "|" + cfg_.run_dir, cfg_.bpf_pin_dir,
                                       // The variant most pods get: loaded once, here.
                                       agent::pod_redirect_config(cfg_, {}, "(defaults)"));
        log::info("eBPF feature gate: {}: {} (load {:.1f} ms, scratch attach {:.1f} ms)",
                  g.decision.usable ? "passed" : "failed", g.decision.reason, g.facts.load_ms,
                  g.facts.attach_ms);
        programs = std::move(g.programs);
        return redirect::EbpfGateAnswer{g.decision.usable, g.decision.reason};
      }};
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
  if (detection->ebpf) {
    backend_info_ = "ebpf in pods (" + detection->ebpf_reason + "), host side " + backend_info_;
  }
  log::info("redirection backend: {}", backend_info_);
  for (const auto& w : detection->warnings) log::warn("backend detection: {}", w);
  for (const auto& l : detection->leftovers) {
    log::warn("leftover state of another backend (not used, not removed): {}", l);
  }
  diagnostics_ = start_diagnostics(opts, *detection, host);
  if (!detection->ebpf) programs.reset();
  if (programs) {
    // Links of pods whose netns went while no agent ran.
    auto swept = redirect::ebpf::sweep_defunct_tw_links(programs->link_dir());
    if (!swept) log::warn("eBPF: {}", swept.error().describe());
    if (swept && *swept > 0) log::info("eBPF: unpinned {} links of pods that are gone", *swept);
  }
  ebpf_programs_ = programs;
  auto made =
      redirect::make_redirectors(*detection, cfg_.scoped_xtables_locking, std::move(programs));
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
       .enrolled_pods = [this] { return static_cast<double>(pods_.size()); },
       .decisions_backend = "ebpf",
       .decisions = ebpf_decisions(ebpf_programs_),
       .ebpf_rules_pods = ebpf_rules_pods(ebpf_programs_)});
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
                                                           .metrics = metrics_.enroll(),
                                                           .observer = &journal_});
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
  AMBIENT_RETURN_IF_ERROR(install::prepare_run_dir(cfg_.run_dir));
  std::error_code ec;
  fs::remove(cni_socket_, ec);
  log_socket_ = cfg_.run_dir + "/" + std::string(cni::kPluginLogSocket);
  fs::remove(log_socket_, ec);
  const auto any = asio::ip::address_v6::any();
  try {
    // The plugin's lines (docs/node-agent.md#plugin-logs). 0600, not
    // upstream's 0666: the plugin runs as root, and the mode keeps others
    // out even of a run dir that is not ours.
    log_server_.emplace(
        ioc_, pool_, asio::local::stream_protocol::endpoint(log_socket_), log::handle_plugin_log,
        LocalServer::Options{.body_limit = log::kPluginLogBodyLimit,
                             .too_large_status = 413,
                             .admit = http::root_only(std::string(cni::kPluginLogSocket)),
                             .name = "plugin log socket"});
    if (::chmod(log_socket_.c_str(), 0600) != 0) return sys_error("chmod 0600 " + log_socket_);
    cni_server_.emplace(
        ioc_, pool_, asio::local::stream_protocol::endpoint(cni_socket_),
        [this](const http::Request& r) { return cni_->handle(r); },
        LocalServer::Options{.admit = http::root_only(std::string(cni::kPluginEventSocket)),
                             .name = "CNI event socket"});
    if (::chmod(cni_socket_.c_str(), 0600) != 0) return sys_error("chmod 0600 " + cni_socket_);
    health_server_.emplace(
        ioc_, pool_, asio::ip::tcp::endpoint(any, cfg_.health_port),
        [this](const http::Request& r) { return health(r); },
        TcpServer::Options{.name = "health port"});
    if (cfg_.monitoring_port > 0) {
      metrics_server_.emplace(
          ioc_, pool_, asio::ip::tcp::endpoint(any, cfg_.monitoring_port),
          [this](const http::Request& r) -> http::Response {
            if (r.target != "/metrics") return {404, "404 page not found\n"};
            // The self-verify's counter lives in a registry of its own.
            return {200, metrics_.serialize() + (self_check_ ? self_check_->metrics_text() : ""),
                    metrics::kTextContentType};
          },
          TcpServer::Options{.name = "metrics port"});
    }
  } catch (const boost::system::system_error& e) {
    return make_error(Errc::Unavailable, std::string("cannot listen: ") + e.what());
  }
  start_admin();
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
  int sig = -1;
  while (sig <= 0) {
    // Standalone mode: a save of the enrolled pods that failed (a full run
    // dir) is retried until it succeeds, not only at the next change.
    const timespec every{.tv_sec = 5, .tv_nsec = 0};
    sig = sigtimedwait(&signals, nullptr, &every);
    if (sig <= 0 && store_) store_->flush();
  }
  log::info("signal {}: shutting down (in-pod rules stay in place)", sig);
  shut_down();
  return 0;
}

void App::shut_down() {
  ready_ = false;
  events_.close_all();
  admin_.reset();  // no admin call reads the parts torn down below (its Status: self_check_)
  // Only its thread ends: /metrics reads its counter until the servers close below.
  if (self_check_) self_check_->stop();
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
  if (controller_ && !upgrade && ebpf_programs_) {
    // The programs stay while pods' filters use them; no later agent adopts
    // them. Standalone cannot tell an uninstall from a restart, and keeps
    // them pinned for the next agent (they go with the boot).
    auto unpinned = ebpf_programs_->unpin();
    if (!unpinned) log::warn("eBPF: {}", unpinned.error().describe());
  }
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
  if (store_) store_->flush();  // no ADD or DEL is served any more
  std::error_code ec;
  fs::remove(cni_socket_, ec);
  fs::remove(log_socket_, ec);
  zds_.reset();
}

// The admin API (docs/ambientctl.md#admin-api). A debugging aid: failing
// to serve it is logged, and the agent runs on without it rather than
// stalling the node's pods.
void App::start_admin() {
  admin_source_ = std::make_unique<admin::AgentSource>(admin::AgentSourceDeps{
      .config = cfg_,
      .pods = pods_,
      .backend = *redirect_.backend,
      .zds = *zds_,
      .journal = journal_,
      .events = events_,
      .backend_kind = std::string(redirect_.backend->name()),
      .backend_reason = backend_info_,
      .host_probes = host_detail_,
      .ready = [this] { return ready_.load() && (!installer_ || installer_->ready()); },
      .zds_accepting = [this] { return ready_.load(); },
      .drift_repairs = [this] { return self_check_->repairs(); },
      .config_values = agent::config_values(cfg_),
      .host_netns = host_netns_,
      .open_pod_netns = [this](
                            const std::string& path,
                            const std::string& pod) { return agent_->open_pod_netns(path, pod); },
      .ebpf_programs = ebpf_programs_});
  std::function<void(const agent::EnrolledPod&, const std::string&)> pod_event;
  if (kube_)
    pod_event = [this](const agent::EnrolledPod& p, const std::string& message) {
      post_pod_event(p, message);
    };
  self_check_ = std::make_unique<admin::SelfCheck>(admin::SelfCheck::Deps{
      .pods = pods_,
      .zds = *zds_,
      .journal = journal_,
      .events = events_,
      .repair = [this](const std::string& uid) { return agent_->repair_pod(uid); },
      .missing_listeners =
          [this](const std::string& uid) { return admin_source_->missing_listeners(uid); },
      .pod_event = std::move(pod_event),
      .interval = std::chrono::seconds(cfg_.self_verify_interval_s)});
  const std::string path = cfg_.run_dir + "/" + std::string(admin::kAdminSocket);
  auto started = admin::AdminServer::start(
      {.socket_path = path,
       .allowed_uid = cfg_.admin_uid >= 0 ? std::optional<uid_t>(cfg_.admin_uid) : std::nullopt},
      *admin_source_);
  if (!started) {
    log::error("admin API not served: {}", started.error().describe());
    return;
  }
  admin_ = std::move(*started);
  log::info("admin API on {} (ambientctl)", path);
}

// A Kubernetes Event on the pod, as `kubectl describe pod` shows them; the
// self-verify's thread waits for it, never a CNI handler.
void App::post_pod_event(const agent::EnrolledPod& p, const std::string& message) {
  const std::string now = admin::rfc3339(std::chrono::system_clock::now());
  const std::string stamp = now.substr(0, 19) + "Z";  // metav1.Time has seconds
  const nlohmann::json body = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"generateName", p.workload.info.name + "."}}},
      {"involvedObject",
       {{"apiVersion", "v1"},
        {"kind", "Pod"},
        {"namespace", p.workload.info.ns},
        {"name", p.workload.info.name},
        {"uid", p.workload.uid}}},
      {"reason", "AmbientRedirectionDriftRepaired"},
      {"message", message},
      {"type", "Warning"},
      {"source", {{"component", "istio-cni-node"}, {"host", cfg_.node_name}}},
      {"reportingComponent", "istio-cni-node"},
      {"reportingInstance", cfg_.node_name},
      {"firstTimestamp", stamp},
      {"lastTimestamp", stamp},
      {"count", 1}};
  auto r = kube_->request("POST", "/api/v1/namespaces/" + p.workload.info.ns + "/events",
                          body.dump(), "application/json", std::chrono::seconds(5));
  if (!r || r->status / 100 != 2) {
    log::warn("pod {}/{}: Kubernetes Event not posted: {}", p.workload.info.ns,
              p.workload.info.name, r ? k8s::api_error_message(*r) : r.error().describe());
  }
}

}  // namespace ambient::app
