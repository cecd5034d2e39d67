// Agent configuration: flags bound to upstream's env vars (flag > env >
// default). Every option is listed once, in config.cpp, which also renders
// --help from that list so the documentation cannot drift.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "install/cni_config.h"
#include "lib/cni_event.h"
#include "lib/result.h"
#include "redirect/backend.h"
#include "redirect/detect.h"

namespace ambient::agent {

// A switch with a third setting, "auto", whose meaning each option states.
enum class Tristate { Auto, On, Off };
std::string_view tristate_name(Tristate v);  // "auto", "true", "false"

// AMBIENT_INSTALL_CNI: Auto runs the installer in Kubernetes mode only.
using InstallCni = Tristate;

// Every default is written here once; --help shows it from a default-made
// Config.
struct Config {
  std::string run_dir = "/var/run/istio-cni";
  std::string ztunnel_uds = "/var/run/ztunnel/ztunnel.sock";
  std::string host_root;   // "" on the host; "/host" in upstream's DaemonSet layout
  std::string host_netns;  // "" = <host root>/proc/1/ns/net
  // Host-side work (probe sets, probe SNAT, reading the host's rules) enters
  // host_netns; off, it runs in the agent's own netns (upstream's default).
  bool allow_switch_to_host_ns = false;
  std::vector<std::string> exclude_namespaces;
  std::vector<std::string> enroll_namespaces;  // standalone policy; "*" = all
  bool dns_capture = false;
  bool ipv6 = false;
  bool scoped_xtables_locking = true;
  std::optional<redirect::IptablesVariant> force_iptables;  // FORCE_IPTABLES_BINARY
  bool native_nftables = false;
  // AMBIENT_EBPF_REDIRECTION: Auto redirects in pods with eBPF where the
  // gate passes (docs/redirection.md#ebpf-choice).
  Tristate ebpf_redirection = Tristate::Off;
  // Where the pods' sk_lookup links are pinned: must be a bpffs that
  // outlives the agent's container (docs/redirection.md#ebpf-time-wait).
  std::string bpf_pin_dir = "/sys/fs/bpf";
  int kubelet_uid = -1;  // -1: find kubelet in <host root>/proc
  std::string probe_snat_ipv4 = std::string(redirect::kDefaultProbeSnatIpv4);
  std::string probe_snat_ipv6 = std::string(redirect::kDefaultProbeSnatIpv6);
  int health_port = 8000;
  int monitoring_port = 15014;
  std::string log_level = "default:info";  // Istio's --log_output_level syntax
  bool log_as_json = false;
  // AMBIENT_ENABLED as upstream's chart sets it; this project is ambient
  // only, so false is refused at start-up rather than silently ignored.
  bool ambient_enabled = true;
  int zds_timeout_ms = 5000;
  // The admin API (<run dir>/admin.sock) serves root and the agent's own
  // user; this uid too when >= 0.
  int admin_uid = -1;
  // Seconds between the agent's own checks of every enrolled pod's
  // redirection (drift is repaired and reported); 0 turns them off.
  int self_verify_interval_s = 60;
  // Kubernetes mode (when no standalone policy is given).
  std::string kubeconfig;  // empty: in-cluster service account
  std::string node_name;
  std::string pod_namespace;
  std::string pod_name;
  std::string system_namespace = "istio-system";
  std::string enablement_selector_yaml;
  bool reconcile_on_startup = true;
  bool disable_safe_upgrade = false;
  bool istio_owned_cni_config = false;

  // Installer (upstream's install-cni in the same process).
  InstallCni install_cni = InstallCni::Auto;
  std::string cni_net_dir = "/host/etc/cni/net.d";
  std::string cni_conf_name;
  bool chained_cni_plugin = true;
  std::string istio_owned_cni_config_filename = std::string(install::kIstioOwnedConflist);
  std::string cni_bin_source_dir = "/opt/cni/bin";
  std::string cni_bin_dir = "/host/opt/cni/bin";
  int kubeconfig_mode = 0600;
  bool cni_conf_group_read = false;
  std::string kube_ca_file;
  bool skip_tls_verify = false;
  std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  bool enable_ambient_detection_retry = false;
  std::string plugin_log_level = "info";
  // The API server as kubelet announces it in every pod's environment.
  std::string kubernetes_service_host;
  std::string kubernetes_service_port;
  std::string kubernetes_service_protocol = "https";

  bool standalone() const { return !enroll_namespaces.empty(); }
  bool installer_enabled() const {
    return install_cni == InstallCni::On || (install_cni == InstallCni::Auto && !standalone());
  }
  std::string host_netns_path() const {
    return host_netns.empty() ? host_root + "/proc/1/ns/net" : host_netns;
  }
  // The kubeconfig the installer writes for the plugin.
  std::string plugin_kubeconfig_path() const {
    return run_dir + "/" + std::string(cni::kPluginKubeconfigFile);
  }
};

struct ParseOutcome {
  Config config;
  bool help = false;
  bool version = false;  // --version or `version`: print it and exit
};

// `getenv` is injectable for tests.
Result<ParseOutcome> parse_config(int argc, const char* const* argv,
                                  const std::function<const char*(const char*)>& getenv);
std::string help_text();
// Every option's value in `c` (flag name, value as --help shows defaults),
// in --help order: the configuration in effect, for the admin API.
std::vector<std::pair<std::string, std::string>> config_values(const Config& c);

}  // namespace ambient::agent
