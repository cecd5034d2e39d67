#include "config/config.h"

#include <sys/stat.h>

#include <charconv>
#include <sstream>

#include "lib/ip_address.h"

namespace ambient::agent {

namespace {

enum class Kind { String, Bool, Int, List };

struct Option {
  const char* flag;  // without "--"
  const char* env;
  Kind kind;
  const char* help;
  std::function<void*(Config&)> field;
};

const std::vector<Option>& options() {
  static const std::vector<Option> opts = {
      {"cni-agent-run-dir", "CNI_AGENT_RUN_DIR", Kind::String,
       "directory of pluginevent.sock (the plugin's socket); default /var/run/istio-cni",
       [](Config& c) -> void* { return &c.run_dir; }},
      {"ztunnel-uds-address", "ZTUNNEL_UDS_ADDRESS", Kind::String,
       "ZDS socket ztunnel connects to; default /var/run/ztunnel/ztunnel.sock",
       [](Config& c) -> void* { return &c.ztunnel_uds; }},
      {"host-root", "AMBIENT_HOST_ROOT", Kind::String,
       "prefix for host paths such as the pod netns (upstream's DaemonSet uses /host); "
       "default empty, for an agent running directly on the host",
       [](Config& c) -> void* { return &c.host_root; }},
      {"host-netns", "AMBIENT_HOST_NETNS", Kind::String,
       "the node's network namespace, never taken for a pod's by the /proc scan; default "
       "<host root>/proc/1/ns/net (use /proc/self/ns/net where pid 1 is not readable and the "
       "agent shares the node's netns)",
       [](Config& c) -> void* { return &c.host_netns; }},
      {"exclude-namespaces", "EXCLUDE_NAMESPACES", Kind::List,
       "comma-separated namespaces never enrolled; items trimmed, empty items dropped",
       [](Config& c) -> void* { return &c.exclude_namespaces; }},
      {"enroll-namespaces", "AMBIENT_ENROLL_NAMESPACES", Kind::List,
       "standalone mode (no Kubernetes): comma-separated namespaces whose pods are enrolled, "
       "or * for all; when empty the agent runs in Kubernetes mode",
       [](Config& c) -> void* { return &c.enroll_namespaces; }},
      {"kubeconfig", "KUBECONFIG", Kind::String,
       "Kubernetes mode: kubeconfig to use; empty = the in-cluster service account "
       "(KUBERNETES_SERVICE_HOST/PORT and its token, re-read when it rotates), else "
       "<run dir>/istio-cni-kubeconfig as the installer writes it",
       [](Config& c) -> void* { return &c.kubeconfig; }},
      {"node-name", "NODE_NAME", Kind::String,
       "Kubernetes mode: this node's name; only its pods are watched (required)",
       [](Config& c) -> void* { return &c.node_name; }},
      {"pod-namespace", "POD_NAMESPACE", Kind::String,
       "namespace of the agent's own DaemonSet (upgrade detection at shutdown)",
       [](Config& c) -> void* { return &c.pod_namespace; }},
      {"pod-name", "POD_NAME", Kind::String, "the agent's own pod name (logs)",
       [](Config& c) -> void* { return &c.pod_name; }},
      {"system-namespace", "SYSTEM_NAMESPACE", Kind::String,
       "namespace of ztunnel's pods, which are never enrolled; default istio-system",
       [](Config& c) -> void* { return &c.system_namespace; }},
      {"ambient-enablement-selector", "AMBIENT_ENABLEMENT_SELECTOR", Kind::String,
       "YAML list of {podSelector, namespaceSelector}: the pods to enroll (upstream's chart "
       "value ambient.enablementSelectors); empty = no pod is enrolled",
       [](Config& c) -> void* { return &c.enablement_selector_yaml; }},
      {"ambient-reconcile-pod-rules-on-startup", "AMBIENT_RECONCILE_POD_RULES_ON_STARTUP",
       Kind::Bool,
       "re-check every enrolled pod's rules at startup, adding what is missing; default true",
       [](Config& c) -> void* { return &c.reconcile_on_startup; }},
      {"ambient-disable-safe-upgrade", "AMBIENT_DISABLE_SAFE_UPGRADE", Kind::Bool,
       "treat every shutdown as an uninstall; default false",
       [](Config& c) -> void* { return &c.disable_safe_upgrade; }},
      {"istio-owned-cni-config", "ISTIO_OWNED_CNI_CONFIG", Kind::Bool,
       "upgrade detection defaults to 'upgrade' and retries twice; default false",
       [](Config& c) -> void* { return &c.istio_owned_cni_config; }},
      {"install-cni", "AMBIENT_INSTALL_CNI", Kind::String,
       "run the installer (plugin binary, kubeconfig, CNI config entry, kept in place and "
       "removed on uninstall): true, false or auto (= on in Kubernetes mode); default auto",
       [](Config& c) -> void* { return &c.install_cni; }},
      {"mounted-cni-net-dir", "MOUNTED_CNI_NET_DIR", Kind::String,
       "the host's CNI configuration directory as mounted; default /host/etc/cni/net.d",
       [](Config& c) -> void* { return &c.cni_net_dir; }},
      {"cni-conf-name", "CNI_CONF_NAME", Kind::String,
       "primary CNI config file; empty = the first valid .conf/.conflist in name order",
       [](Config& c) -> void* { return &c.cni_conf_name; }},
      {"chained-cni-plugin", "CHAINED_CNI_PLUGIN", Kind::Bool,
       "insert into the primary config (true) or write a standalone conf; default true",
       [](Config& c) -> void* { return &c.chained_cni_plugin; }},
      {"istio-owned-cni-config-filename", "ISTIO_OWNED_CNI_CONFIG_FILENAME", Kind::String,
       "file of the Istio-owned conflist (also read from ISTIO_OWNED_CNI_CONF_FILENAME, as the "
       "chart sets it); default 02-istio-cni.conflist",
       [](Config& c) -> void* { return &c.istio_owned_cni_config_filename; }},
      {"cni-bin-source-dir", "AMBIENT_CNI_BIN_SOURCE_DIR", Kind::String,
       "where the plugin binary to install is; default /opt/cni/bin",
       [](Config& c) -> void* { return &c.cni_bin_source_dir; }},
      {"cni-bin-dir", "AMBIENT_CNI_BIN_DIR", Kind::String,
       "the host's CNI binary directory as mounted; default /host/opt/cni/bin",
       [](Config& c) -> void* { return &c.cni_bin_dir; }},
      {"kubeconfig-mode", "KUBECONFIG_MODE", Kind::Int,
       "file mode of the plugin's kubeconfig (0600 octal, 384 decimal, 0x180 …); default 0600",
       [](Config& c) -> void* { return &c.kubeconfig_mode; }},
      {"cni-conf-group-read", "CNI_CONF_GROUP_READ", Kind::Bool,
       "config files we own get mode 0640 instead of 0600; default false",
       [](Config& c) -> void* { return &c.cni_conf_group_read; }},
      {"kube-ca-file", "KUBE_CA_FILE", Kind::String,
       "CA for the plugin's kubeconfig; default <service account dir>/ca.crt",
       [](Config& c) -> void* { return &c.kube_ca_file; }},
      {"skip-tls-verify", "SKIP_TLS_VERIFY", Kind::Bool,
       "write insecure-skip-tls-verify into the plugin's kubeconfig; default false",
       [](Config& c) -> void* { return &c.skip_tls_verify; }},
      {"service-account-dir", "AMBIENT_SERVICE_ACCOUNT_DIR", Kind::String,
       "token and CA for the plugin's kubeconfig; default "
       "/var/run/secrets/kubernetes.io/serviceaccount",
       [](Config& c) -> void* { return &c.service_account_dir; }},
      {"enable-ambient-detection-retry", "ENABLE_AMBIENT_DETECTION_RETRY", Kind::Bool,
       "written into the plugin config: long API retries when the agent is down; default false",
       [](Config& c) -> void* { return &c.enable_ambient_detection_retry; }},
      {"plugin-log-level", "AMBIENT_PLUGIN_LOG_LEVEL", Kind::String,
       "written into the plugin config as plugin_log_level; default info",
       [](Config& c) -> void* { return &c.plugin_log_level; }},
      {"ambient-dns-capture", "AMBIENT_DNS_CAPTURE", Kind::Bool,
       "redirect pod DNS (udp/tcp 53) to ztunnel's 15053; default false",
       [](Config& c) -> void* { return &c.dns_capture; }},
      {"ambient-ipv6", "AMBIENT_IPV6", Kind::Bool,
       "install IPv6 rules and routes too; default false",
       [](Config& c) -> void* { return &c.ipv6; }},
      {"ambient-use-scoped-xtables-locking", "AMBIENT_USE_SCOPED_XTABLES_LOCKING", Kind::Bool,
       "run iptables in a private mount namespace with its own xtables lock and no NSS; "
       "default true",
       [](Config& c) -> void* { return &c.scoped_xtables_locking; }},
      {"native-nftables", "NATIVE_NFTABLES", Kind::Bool,
       "redirect with native nftables (in process, one transaction per pod) instead of "
       "iptables; default false",
       [](Config& c) -> void* { return &c.native_nftables; }},
      {"kubelet-uid", "AMBIENT_KUBELET_UID", Kind::Int,
       "UID whose connections get the probe SNAT (only kubelet's health probes should); "
       "default -1 = the UID of the kubelet (or kubelite, k3s) process found in "
       "<host root>/proc",
       [](Config& c) -> void* { return &c.kubelet_uid; }},
      {"force-iptables-binary", "FORCE_IPTABLES_BINARY", Kind::String,
       "legacy or nft: use iptables-legacy or iptables-nft instead of the host's default "
       "iptables; empty = default",
       [](Config& c) -> void* { return &c.force_iptables_binary; }},
      {"host-probe-snat-ip", "HOST_PROBE_SNAT_IP", Kind::String,
       "source address of SNATed kubelet probes; default 169.254.7.127",
       [](Config& c) -> void* { return &c.probe_snat_ipv4; }},
      {"host-probe-snat-ipv6", "HOST_PROBE_SNAT_IPV6", Kind::String,
       "IPv6 source of SNATed kubelet probes; default fd16:9254:7127:1337:ffff:ffff:ffff:ffff",
       [](Config& c) -> void* { return &c.probe_snat_ipv6; }},
      {"health-port", "AMBIENT_HEALTH_PORT", Kind::Int,
       "TCP port of /healthz and /readyz; default 8000",
       [](Config& c) -> void* { return &c.health_port; }},
      {"monitoring-port", "MONITORING_PORT", Kind::Int,
       "TCP port of /metrics (Prometheus); <= 0 disables; default 15014",
       [](Config& c) -> void* { return &c.monitoring_port; }},
      {"log_output_level", "LOG_OUTPUT_LEVEL", Kind::String,
       "debug, info, warn or error; default info", [](Config& c) -> void* { return &c.log_level; }},
      {"zds-timeout-ms", "AMBIENT_ZDS_TIMEOUT_MS", Kind::Int,
       "per-message send and ack timeout towards ztunnel; default 5000",
       [](Config& c) -> void* { return &c.zds_timeout_ms; }},
  };
  return opts;
}

Result<bool> parse_bool(const std::string& v) {
  // Go's strconv.ParseBool, as upstream reads these variables.
  for (const char* t : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (v == t) return true;
  }
  for (const char* f : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (v == f) return false;
  }
  return make_error(Errc::InvalidArgument, "\"" + v + "\" is not a boolean");
}

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto b = item.find_first_not_of(" \t");
    auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

Result<> assign(const Option& o, Config& c, const std::string& v, const std::string& source) {
  void* f = o.field(c);
  switch (o.kind) {
    case Kind::String:
      *static_cast<std::string*>(f) = v;
      return {};
    case Kind::List:
      *static_cast<std::vector<std::string>*>(f) = split_list(v);
      return {};
    case Kind::Bool: {
      auto b = parse_bool(v);
      if (!b) return std::move(b).error().with(source);
      *static_cast<bool*>(f) = *b;
      return {};
    }
    case Kind::Int: {
      // Base prefixes as Go's flag parsing (strconv base 0): "0600" is octal,
      // as upstream's KUBECONFIG_MODE is usually written.
      int n = 0;
      int base = 10;
      std::string_view digits = v;
      if (digits.size() > 2 && (digits.substr(0, 2) == "0x" || digits.substr(0, 2) == "0X")) {
        base = 16;
        digits.remove_prefix(2);
      } else if (digits.size() > 2 &&
                 (digits.substr(0, 2) == "0o" || digits.substr(0, 2) == "0O")) {
        base = 8;
        digits.remove_prefix(2);
      } else if (digits.size() > 1 && digits[0] == '0') {
        base = 8;
        digits.remove_prefix(1);
      }
      auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n, base);
      if (ec != std::errc() || end != digits.data() + digits.size() || v.empty()) {
        return make_error(Errc::InvalidArgument, source + ": \"" + v + "\" is not an integer");
      }
      *static_cast<int*>(f) = n;
      return {};
    }
  }
  return {};
}

}  // namespace

std::string help_text() {
  std::string s =
      "ambient-agent: Istio ambient node agent (ambient-cni)\n\n"
      "Serves the istio-cni plugin on <run dir>/pluginevent.sock, installs traffic\n"
      "redirection inside enrolled pods' network namespaces, and hands each netns to\n"
      "ztunnel over ZDS.\n\n"
      "Usage: ambient-agent [flags]\n\n"
      "Every flag can also be set by its environment variable; a flag wins over the\n"
      "variable. Booleans take 1/t/true/0/f/false (any case as Go accepts).\n\n";
  for (const auto& o : options()) {
    s += "  --" + std::string(o.flag) + "  (env " + o.env + ")\n      " + o.help + "\n";
  }
  s += "  --help\n      print this text\n";
  return s;
}

Result<ParseOutcome> parse_config(int argc, const char* const* argv,
                                  const std::function<const char*(const char*)>& getenv) {
  ParseOutcome out;
  for (const auto& o : options()) {
    if (const char* v = getenv(o.env)) {
      AMBIENT_RETURN_IF_ERROR(assign(o, out.config, v, std::string("env ") + o.env));
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      out.help = true;
      return out;
    }
    if (arg.rfind("--", 0) != 0) {
      return make_error(Errc::InvalidArgument, "unexpected argument \"" + arg + "\" (see --help)");
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Option* opt = nullptr;
    for (const auto& o : options()) {
      if (name == o.flag) opt = &o;
    }
    if (!opt) return make_error(Errc::InvalidArgument, "unknown flag --" + name + " (see --help)");
    if (!has_value) {
      if (opt->kind == Kind::Bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return make_error(Errc::InvalidArgument, "flag --" + name + " needs a value");
      }
    }
    AMBIENT_RETURN_IF_ERROR(assign(*opt, out.config, value, "flag --" + name));
  }
  Config& c = out.config;
  if (c.istio_owned_cni_config_filename.empty()) {
    if (const char* v = getenv("ISTIO_OWNED_CNI_CONF_FILENAME"))
      c.istio_owned_cni_config_filename = v;
  }
  auto v4 = IpAddress::parse(c.probe_snat_ipv4);
  if (!v4 || v4->family != AF_INET) {
    return make_error(Errc::InvalidArgument,
                      "HOST_PROBE_SNAT_IP \"" + c.probe_snat_ipv4 + "\" is not an IPv4 address");
  }
  auto v6 = IpAddress::parse(c.probe_snat_ipv6);
  if (!v6 || v6->family != AF_INET6) {
    return make_error(Errc::InvalidArgument,
                      "HOST_PROBE_SNAT_IPV6 \"" + c.probe_snat_ipv6 + "\" is not an IPv6 address");
  }
  if (!c.force_iptables_binary.empty() && c.force_iptables_binary != "legacy" &&
      c.force_iptables_binary != "nft") {
    return make_error(Errc::InvalidArgument, "FORCE_IPTABLES_BINARY must be legacy or nft, got \"" +
                                                 c.force_iptables_binary + "\"");
  }
  if (c.enroll_namespaces.empty()) {
    const char* host = getenv("KUBERNETES_SERVICE_HOST");
    struct stat st {};
    bool installer_kubeconfig = ::stat((c.run_dir + "/istio-cni-kubeconfig").c_str(), &st) == 0;
    if (c.kubeconfig.empty() && (!host || !*host) && !installer_kubeconfig) {
      return make_error(Errc::InvalidArgument,
                        "no enrollment source: set --enroll-namespaces "
                        "(AMBIENT_ENROLL_NAMESPACES) for standalone mode, or --kubeconfig "
                        "(KUBECONFIG) / run in a cluster for Kubernetes mode");
    }
    if (c.node_name.empty()) {
      return make_error(Errc::InvalidArgument,
                        "Kubernetes mode needs NODE_NAME (--node-name) to watch this node's pods");
    }
  }
  return out;
}

}  // namespace ambient::agent
