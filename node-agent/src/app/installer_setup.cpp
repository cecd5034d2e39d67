#include "app/installer_setup.h"

#include "k8s/controller.h"

namespace ambient::app {

Result<install::InstallerConfig> installer_config(const agent::Config& cfg) {
  auto selectors_json = k8s::selector_yaml_to_json(cfg.enablement_selector_yaml);
  if (!selectors_json) return std::move(selectors_json).error();
  return install::InstallerConfig{
      .cni_net_dir = cfg.cni_net_dir,
      .cni_conf_name = cfg.cni_conf_name,
      .chained = cfg.chained_cni_plugin,
      .istio_owned = cfg.istio_owned_cni_config && cfg.chained_cni_plugin,
      .istio_owned_filename = cfg.istio_owned_cni_config_filename.empty()
                                  ? std::string(install::kIstioOwnedConflist)
                                  : cfg.istio_owned_cni_config_filename,
      .bin_source_dir = cfg.cni_bin_source_dir,
      .bin_target_dirs = {cfg.cni_bin_dir},
      .run_dir = cfg.run_dir,
      .kubeconfig_mode = static_cast<mode_t>(cfg.kubeconfig_mode),
      .conf_group_read = cfg.cni_conf_group_read,
      .sa_dir = cfg.service_account_dir,
      .kube_ca_file = cfg.kube_ca_file,
      .skip_tls_verify = cfg.skip_tls_verify,
      .k8s_protocol = cfg.kubernetes_service_protocol.empty() ? std::string("https")
                                                              : cfg.kubernetes_service_protocol,
      .k8s_host = cfg.kubernetes_service_host,
      .k8s_port = cfg.kubernetes_service_port,
      .write_kubeconfig = !cfg.standalone(),
      .entry =
          install::plugin_entry(true, cfg.run_dir, install::Json::parse(selectors_json->dump()),
                                cfg.exclude_namespaces, cfg.pod_namespace, cfg.native_nftables,
                                cfg.enable_ambient_detection_retry, cfg.plugin_log_level)};
}

}  // namespace ambient::app
