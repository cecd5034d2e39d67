// The installer part of the agent (upstream runs installer and agent in one
// process): puts the plugin binary, its kubeconfig and the istio-cni entry
// onto the node, keeps them there when other components rewrite or delete
// them (inotify, repaired at once), and removes them on uninstall.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "install/cni_config.h"
#include "lib/result.h"
#include "metrics/metrics.h"

namespace ambient::install {

struct InstallerConfig {
  std::string cni_net_dir = "/host/etc/cni/net.d";  // MOUNTED_CNI_NET_DIR
  std::string cni_conf_name;                        // CNI_CONF_NAME
  bool chained = true;                              // CHAINED_CNI_PLUGIN
  bool istio_owned = false;                         // ISTIO_OWNED_CNI_CONFIG (with ambient)
  std::string istio_owned_filename = std::string(kIstioOwnedConflist);
  std::string bin_source_dir = "/opt/cni/bin";
  std::vector<std::string> bin_target_dirs = {"/host/opt/cni/bin"};
  std::string run_dir = "/var/run/istio-cni";  // kubeconfig goes here
  mode_t kubeconfig_mode = 0600;               // KUBECONFIG_MODE
  bool conf_group_read = false;                // CNI_CONF_GROUP_READ
  std::string sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  std::string kube_ca_file;                                // KUBE_CA_FILE ("" = <sa dir>/ca.crt)
  bool skip_tls_verify = false;                            // SKIP_TLS_VERIFY
  std::string k8s_protocol = "https", k8s_host, k8s_port;  // KUBERNETES_SERVICE_*
  bool write_kubeconfig = true;  // false where there is no service account (standalone)
  Json entry;                    // the istio-cni plugin entry (docs/installer.md#insertion)
};

// The entry the installer writes, from the agent's settings.
Json plugin_entry(bool ambient_enabled, const std::string& run_dir,
                  const Json& enablement_selectors, const std::vector<std::string>& exclude,
                  const std::string& pod_namespace, bool native_nftables, bool detection_retry,
                  const std::string& log_level);

// The standalone (not chained) .conf: upstream's declaration key order.
std::string standalone_conf(const Json& entry);

// YAML exactly as upstream writes it (sorted keys).
std::string kubeconfig_yaml(const std::string& server, const std::string& ca_pem,
                            const std::string& token, bool skip_tls_verify);

class Installer {
 public:
  // `metrics`: istio_cni_installs_total and istio_cni_install_ready
  // (docs/node-agent.md#metrics).
  explicit Installer(InstallerConfig cfg, metrics::InstallMetrics metrics = {})
      : cfg_(std::move(cfg)), metrics_(metrics) {}

  // One pass: binaries, kubeconfig, and the config entry if it is missing
  // or differs. Returns the config path in use. A failed pass is counted
  // by the step that failed.
  Result<std::string> install_once();
  // Installs, then repairs on every change until `stop`. Rewrites are
  // throttled when something keeps undoing ours (two installers, a CNI
  // that owns its file): each consecutive fight doubles the wait, up to 5 s.
  // A successful pass is counted when it wrote something or made the
  // installer ready, not for each periodic re-check.
  Result<> run(const std::atomic<bool>& stop);
  // Uninstall: our entry (or our own file), the kubeconfig and the binary.
  // A primary config we did not create is never deleted.
  Result<> cleanup();

  bool ready() const { return ready_; }
  uint64_t repairs() const { return repairs_; }
  uint64_t throttled() const { return throttled_; }

 private:
  // What identifies a file's version cheaply: dev, inode, size, mtime.
  using Stamp = std::tuple<dev_t, ino_t, off_t, time_t, long>;
  static Stamp stamp(const struct stat& st);
  Result<> copy_binaries();
  Result<> write_kubeconfig();
  Result<std::string> install_config();
  Result<std::string> target_config_path();
  Result<bool> config_is_valid(const std::string& path);
  // Every file the installer writes goes through here, so a pass knows
  // whether it changed anything.
  Result<> write(const std::string& path, const std::string& text, mode_t mode);
  void set_ready(bool ready);

  InstallerConfig cfg_;
  const metrics::InstallMetrics metrics_;
  std::string config_path_;
  // Per installed binary: (source, target) stamps when last found equal.
  std::map<std::string, std::pair<Stamp, Stamp>> verified_;
  bool converted_conf_ = false;
  std::atomic<bool> ready_{false};
  std::atomic<uint64_t> repairs_{0}, throttled_{0};
  uint64_t writes_ = 0;  // files written by passes (the installer's thread only)
};

}  // namespace ambient::install
