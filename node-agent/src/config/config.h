// Agent configuration: flags bound to upstream's env vars (flag > env >
// default). Every option is listed once, in config.cpp, which also renders
// --help from that list so the documentation cannot drift.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "lib/result.h"
#include "redirect/backend.h"

namespace ambient::agent {

struct Config {
  std::string run_dir = "/var/run/istio-cni";
  std::string ztunnel_uds = "/var/run/ztunnel/ztunnel.sock";
  std::string host_root;   // "" on the host; "/host" in upstream's DaemonSet layout
  std::string host_netns;  // "" = <host root>/proc/1/ns/net
  std::vector<std::string> exclude_namespaces;
  std::vector<std::string> enroll_namespaces;  // standalone policy; "*" = all
  bool dns_capture = false;
  bool ipv6 = false;
  bool scoped_xtables_locking = true;
  std::string force_iptables_binary;  // "", "legacy", "nft"
  bool native_nftables = false;
  int kubelet_uid = -1;  // -1: find kubelet in <host root>/proc
  std::string probe_snat_ipv4 = "169.254.7.127";
  std::string probe_snat_ipv6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";
  int health_port = 8000;
  int monitoring_port = 15014;
  std::string log_level = "info";
  int zds_timeout_ms = 5000;
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
  std::string install_cni = "auto";  // auto = on in Kubernetes mode, off standalone
  std::string cni_net_dir = "/host/etc/cni/net.d";
  std::string cni_conf_name;
  bool chained_cni_plugin = true;
  std::string istio_owned_cni_config_filename;
  std::string cni_bin_source_dir = "/opt/cni/bin";
  std::string cni_bin_dir = "/host/opt/cni/bin";
  int kubeconfig_mode = 0600;
  bool cni_conf_group_read = false;
  std::string kube_ca_file;
  bool skip_tls_verify = false;
  std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  bool enable_ambient_detection_retry = false;
  std::string plugin_log_level = "info";

  bool standalone() const { return !enroll_namespaces.empty(); }
  bool installer_enabled() const {
    return install_cni == "true" || (install_cni == "auto" && !standalone());
  }
};

struct ParseOutcome {
  Config config;
  bool help = false;
};

// `getenv` is injectable for tests.
Result<ParseOutcome> parse_config(int argc, const char* const* argv,
                                  const std::function<const char*(const char*)>& getenv);
std::string help_text();

}  // namespace ambient::agent
