#include "config/config.h"

#include <sys/stat.h>

#include <charconv>
#include <sstream>
#include <type_traits>
#include <variant>

#include "lib/ip_address.h"
#include "lib/text.h"
#include "log/log.h"

namespace ambient::agent {

std::string_view tristate_name(Tristate v) {
  switch (v) {
    case Tristate::On:
      return "true";
    case Tristate::Off:
      return "false";
    case Tristate::Auto:
      break;
  }
  return "auto";
}

namespace {

// Each option names the Config member it sets; the member's type decides how
// its text is parsed and how its default is shown in --help.
using Field = std::variant<std::string Config::*, bool Config::*, int Config::*,
                           std::vector<std::string> Config::*, Tristate Config::*,
                           std::optional<redirect::IptablesVariant> Config::*>;

struct Option {
  const char* flag;  // without "--"
  const char* env;
  const char* help;
  Field field;
};

// Every option, in --help order.
const Option kOptions[] = {
    {"cni-agent-run-dir", "CNI_AGENT_RUN_DIR",
     "directory of pluginevent.sock and log.sock (the plugin's sockets)", &Config::run_dir},
    {"ztunnel-uds-address", "ZTUNNEL_UDS_ADDRESS", "ZDS socket ztunnel connects to",
     &Config::ztunnel_uds},
    {"host-root", "AMBIENT_HOST_ROOT",
     "prefix for host paths such as the pod netns (upstream's DaemonSet uses /host); "
     "default empty, for an agent running directly on the host",
     &Config::host_root},
    {"host-netns", "AMBIENT_HOST_NETNS",
     "the node's network namespace, never taken for a pod's by the /proc scan; default "
     "<host root>/proc/1/ns/net (use /proc/self/ns/net where pid 1 is not readable and the "
     "agent shares the node's netns)",
     &Config::host_netns},
    {"allow-switch-to-host-ns", "ALLOW_SWITCH_TO_HOST_NS",
     "do host-side work (probe sets, the probe SNAT rule, reading the host's rules) inside "
     "--host-netns, as an agent in a pod netns of its own must (the chart sets it then); off, "
     "it happens in the agent's own netns",
     &Config::allow_switch_to_host_ns},
    {"exclude-namespaces", "EXCLUDE_NAMESPACES",
     "comma-separated namespaces never enrolled; items trimmed, empty items dropped",
     &Config::exclude_namespaces},
    {"enroll-namespaces", "AMBIENT_ENROLL_NAMESPACES",
     "standalone mode (no Kubernetes): comma-separated namespaces whose pods are enrolled, "
     "or * for all; when empty the agent runs in Kubernetes mode",
     &Config::enroll_namespaces},
    {"kubeconfig", "KUBECONFIG",
     "Kubernetes mode: kubeconfig to use; empty = the in-cluster service account "
     "(KUBERNETES_SERVICE_HOST/PORT and its token, re-read when it rotates), else "
     "<run dir>/istio-cni-kubeconfig as the installer writes it",
     &Config::kubeconfig},
    {"node-name", "NODE_NAME",
     "Kubernetes mode: this node's name; only its pods are watched (required)", &Config::node_name},
    {"pod-namespace", "POD_NAMESPACE",
     "namespace of the agent's own DaemonSet (upgrade detection at shutdown)",
     &Config::pod_namespace},
    {"pod-name", "POD_NAME", "the agent's own pod name (logs)", &Config::pod_name},
    {"system-namespace", "SYSTEM_NAMESPACE",
     "namespace of ztunnel's pods, which are never enrolled", &Config::system_namespace},
    {"ambient-enablement-selector", "AMBIENT_ENABLEMENT_SELECTOR",
     "YAML list of {podSelector, namespaceSelector}: the pods to enroll (upstream's chart "
     "value ambient.enablementSelectors); empty = no pod is enrolled",
     &Config::enablement_selector_yaml},
    {"ambient-reconcile-pod-rules-on-startup", "AMBIENT_RECONCILE_POD_RULES_ON_STARTUP",
     "re-check every enrolled pod's rules at startup, adding what is missing",
     &Config::reconcile_on_startup},
    {"ambient-disable-safe-upgrade", "AMBIENT_DISABLE_SAFE_UPGRADE",
     "treat every shutdown as an uninstall", &Config::disable_safe_upgrade},
    {"istio-owned-cni-config", "ISTIO_OWNED_CNI_CONFIG",
     "upgrade detection defaults to 'upgrade' and retries twice", &Config::istio_owned_cni_config},
    {"install-cni", "AMBIENT_INSTALL_CNI",
     "run the installer (plugin binary, kubeconfig, CNI config entry, kept in place and "
     "removed on uninstall): true, false or auto (= on in Kubernetes mode)",
     &Config::install_cni},
    {"mounted-cni-net-dir", "MOUNTED_CNI_NET_DIR",
     "the host's CNI configuration directory as mounted", &Config::cni_net_dir},
    {"cni-conf-name", "CNI_CONF_NAME",
     "primary CNI config file; empty = the first valid .conf/.conflist in name order",
     &Config::cni_conf_name},
    {"chained-cni-plugin", "CHAINED_CNI_PLUGIN",
     "insert into the primary config (true) or write a standalone conf",
     &Config::chained_cni_plugin},
    {"istio-owned-cni-config-filename", "ISTIO_OWNED_CNI_CONFIG_FILENAME",
     "file of the Istio-owned conflist (also read from ISTIO_OWNED_CNI_CONF_FILENAME, as the "
     "chart sets it)",
     &Config::istio_owned_cni_config_filename},
    {"cni-bin-source-dir", "AMBIENT_CNI_BIN_SOURCE_DIR", "where the plugin binary to install is",
     &Config::cni_bin_source_dir},
    {"cni-bin-dir", "AMBIENT_CNI_BIN_DIR", "the host's CNI binary directory as mounted",
     &Config::cni_bin_dir},
    {"kubeconfig-mode", "KUBECONFIG_MODE",
     "file mode of the plugin's kubeconfig (0600 octal, 384 decimal, 0x180 …)",
     &Config::kubeconfig_mode},
    {"cni-conf-group-read", "CNI_CONF_GROUP_READ",
     "config files we own get mode 0640 instead of 0600", &Config::cni_conf_group_read},
    {"kube-ca-file", "KUBE_CA_FILE",
     "CA for the plugin's kubeconfig; default <service account dir>/ca.crt", &Config::kube_ca_file},
    {"skip-tls-verify", "SKIP_TLS_VERIFY",
     "write insecure-skip-tls-verify into the plugin's kubeconfig", &Config::skip_tls_verify},
    {"service-account-dir", "AMBIENT_SERVICE_ACCOUNT_DIR",
     "token and CA for the plugin's kubeconfig", &Config::service_account_dir},
    {"enable-ambient-detection-retry", "ENABLE_AMBIENT_DETECTION_RETRY",
     "written into the plugin config: long API retries when the agent is down",
     &Config::enable_ambient_detection_retry},
    {"plugin-log-level", "AMBIENT_PLUGIN_LOG_LEVEL",
     "written into the plugin config as plugin_log_level", &Config::plugin_log_level},
    {"ambient-dns-capture", "AMBIENT_DNS_CAPTURE",
     "redirect pod DNS (udp/tcp 53) to ztunnel's 15053", &Config::dns_capture},
    {"ambient-ipv6", "AMBIENT_IPV6", "install IPv6 rules and routes too", &Config::ipv6},
    {"ambient-use-scoped-xtables-locking", "AMBIENT_USE_SCOPED_XTABLES_LOCKING",
     "run iptables in a private mount namespace with its own xtables lock and no NSS",
     &Config::scoped_xtables_locking},
    {"native-nftables", "NATIVE_NFTABLES",
     "redirect with native nftables (in process, one transaction per pod) instead of "
     "iptables",
     &Config::native_nftables},
    {"ebpf-redirection", "AMBIENT_EBPF_REDIRECTION",
     "redirect inside pods with eBPF tc programs instead of netfilter rules: true, false, or "
     "auto (eBPF where the start-up feature gate passes); the host side stays on the netfilter "
     "backend, and the choice holds until the node reboots",
     &Config::ebpf_redirection},
    {"bpf-pin-dir", "AMBIENT_BPF_PIN_DIR",
     "a bpffs mount (the node's, mounted into the agent's container) where eBPF redirection pins "
     "each pod's sk_lookup link under ambient/<agent id>/, so it outlives the agent, and its "
     "loaded programs, so that a restart in the same boot need not load them again; without a "
     "bpffs there the eBPF gate fails",
     &Config::bpf_pin_dir},
    {"kubelet-uid", "AMBIENT_KUBELET_UID",
     "UID whose connections get the probe SNAT (only kubelet's health probes should); "
     "-1 = the UID of the kubelet (or kubelite, k3s) process found in <host root>/proc",
     &Config::kubelet_uid},
    {"force-iptables-binary", "FORCE_IPTABLES_BINARY",
     "legacy or nft: use iptables-legacy or iptables-nft, whatever detection would choose; "
     "empty = detect",
     &Config::force_iptables},
    {"host-probe-snat-ip", "HOST_PROBE_SNAT_IP", "source address of SNATed kubelet probes",
     &Config::probe_snat_ipv4},
    {"host-probe-snat-ipv6", "HOST_PROBE_SNAT_IPV6", "IPv6 source of SNATed kubelet probes",
     &Config::probe_snat_ipv6},
    {"health-port", "AMBIENT_HEALTH_PORT", "TCP port of /healthz and /readyz",
     &Config::health_port},
    {"monitoring-port", "MONITORING_PORT", "TCP port of /metrics (Prometheus); <= 0 disables",
     &Config::monitoring_port},
    {"log_output_level", "LOG_OUTPUT_LEVEL",
     "Istio's syntax: a level (debug, info, warn, error, none) or scope:level items separated by "
     "commas; scopes default, cni-agent, cni-plugin, install",
     &Config::log_level},
    {"ambient-enabled", "AMBIENT_ENABLED",
     "upstream's switch for the ambient node agent; ambient-cni is the ambient node agent, so "
     "false stops it with an error",
     &Config::ambient_enabled},
    {"log_as_json", "LOG_AS_JSON", "one JSON object per log line (time, level, scope, msg)",
     &Config::log_as_json},
    {"zds-timeout-ms", "AMBIENT_ZDS_TIMEOUT_MS", "per-message send and ack timeout towards ztunnel",
     &Config::zds_timeout_ms},
    {"admin-uid", "AMBIENT_ADMIN_UID",
     "one more uid allowed on the admin API socket <run dir>/admin.sock (ambientctl), besides "
     "root and the agent's own user; the socket is chowned to it (it also needs search "
     "permission on the 0750 run dir); -1 = none",
     &Config::admin_uid},
    {"self-verify-interval", "AMBIENT_SELF_VERIFY_INTERVAL",
     "seconds between the agent's own checks of every enrolled pod's redirection; drift in "
     "our rules, routes and sysctls is repaired, counted in ambient_drift_repairs_total{kind} "
     "and logged (Kubernetes mode: also an Event on the pod); 0 = off",
     &Config::self_verify_interval_s},
    {"kubernetes-service-host", "KUBERNETES_SERVICE_HOST",
     "Kubernetes mode: the API server's address, as kubelet sets it in every pod; with the "
     "service account it makes the in-cluster configuration and the plugin's kubeconfig",
     &Config::kubernetes_service_host},
    {"kubernetes-service-port", "KUBERNETES_SERVICE_PORT", "the API server's port, as above",
     &Config::kubernetes_service_port},
    {"kubernetes-service-protocol", "KUBERNETES_SERVICE_PROTOCOL",
     "scheme written into the plugin's kubeconfig", &Config::kubernetes_service_protocol},
};

Result<bool> parse_bool(const std::string& v) {
  // Go's strconv.ParseBool, as upstream reads these variables.
  if (auto b = text::parse_go_bool(v)) return *b;
  return make_error(Errc::InvalidArgument, "\"" + v + "\" is not a boolean");
}

Result<int> parse_int(const std::string& v) {
  // Base prefixes as Go's flag parsing (strconv base 0): "0600" is octal,
  // as upstream's KUBECONFIG_MODE is usually written.
  int n = 0;
  int base = 10;
  std::string_view digits = v;
  if (digits.size() > 2 && (digits.substr(0, 2) == "0x" || digits.substr(0, 2) == "0X")) {
    base = 16;
    digits.remove_prefix(2);
  } else if (digits.size() > 2 && (digits.substr(0, 2) == "0o" || digits.substr(0, 2) == "0O")) {
    base = 8;
    digits.remove_prefix(2);
  } else if (digits.size() > 1 && digits[0] == '0') {
    base = 8;
    digits.remove_prefix(1);
  }
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n, base);
  if (ec != std::errc() || end != digits.data() + digits.size() || v.empty()) {
    return make_error(Errc::InvalidArgument, "\"" + v + "\" is not an integer");
  }
  return n;
}

Result<Tristate> parse_tristate(const std::string& v) {
  if (v == "auto") return Tristate::Auto;
  auto b = parse_bool(v);
  if (!b) return make_error(Errc::InvalidArgument, "\"" + v + "\" is not true, false or auto");
  return *b ? Tristate::On : Tristate::Off;
}

Result<std::optional<redirect::IptablesVariant>> parse_iptables_variant(const std::string& v) {
  if (v.empty()) return std::optional<redirect::IptablesVariant>();
  if (v == "legacy") return std::optional(redirect::IptablesVariant::Legacy);
  if (v == "nft") return std::optional(redirect::IptablesVariant::Nft);
  return make_error(Errc::InvalidArgument, "\"" + v + "\" is not legacy or nft (or empty: detect)");
}

template <class T>
Result<> store(Config& c, T Config::*member, Result<T> parsed, const std::string& source) {
  if (!parsed) return std::move(parsed).error().context(source);
  c.*member = std::move(*parsed);
  return {};
}

Result<> assign(const Option& o, Config& c, const std::string& v, const std::string& source) {
  return std::visit(
      [&](auto member) -> Result<> {
        using T = std::remove_reference_t<decltype(c.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return store(c, member, Result<T>(v), source);
        } else if constexpr (std::is_same_v<T, bool>) {
          return store(c, member, parse_bool(v), source);
        } else if constexpr (std::is_same_v<T, int>) {
          return store(c, member, parse_int(v), source);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          return store(c, member, Result<T>(text::split_list(v)), source);
        } else if constexpr (std::is_same_v<T, Tristate>) {
          return store(c, member, parse_tristate(v), source);
        } else {
          return store(c, member, parse_iptables_variant(v), source);
        }
      },
      o.field);
}

// The value `c` holds, as --help shows defaults; "" when there is nothing
// to show (an empty string or list).
std::string value_text(const Config& c, const Field& field) {
  return std::visit(
      [&c](auto member) -> std::string {
        const auto& v = c.*member;
        using T = std::remove_cvref_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return v;
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int>) {
          return std::to_string(v);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::string s;
          for (const auto& item : v) s += (s.empty() ? "" : ",") + item;
          return s;
        } else if constexpr (std::is_same_v<T, Tristate>) {
          return std::string(tristate_name(v));
        } else {
          return v ? std::string(*v == redirect::IptablesVariant::Legacy ? "legacy" : "nft") : "";
        }
      },
      field);
}

std::string default_text(const Field& field) {
  static const Config defaults;
  return value_text(defaults, field);
}

bool is_bool(const Option& o) { return std::holds_alternative<bool Config::*>(o.field); }

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
  for (const auto& o : kOptions) {
    const std::string def = default_text(o.field);
    s += "  --" + std::string(o.flag) + "  (env " + o.env + ")\n      " + o.help +
         (def.empty() ? "" : "; default " + def) + "\n";
  }
  s += "  --version, version\n      print the version\n";
  s += "  --help\n      print this text\n";
  return s;
}

std::vector<std::pair<std::string, std::string>> config_values(const Config& c) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& o : kOptions) out.emplace_back(o.flag, value_text(c, o.field));
  return out;
}

namespace {

// What single options cannot check: settings that contradict each other or
// leave the agent without a way to run.
Result<> validate(const Config& c) {
  if (!c.ambient_enabled) {
    return make_error(Errc::InvalidArgument,
                      "AMBIENT_ENABLED=false: ambient-cni only implements ambient mode; use "
                      "upstream's istio-cni for sidecar-only clusters");
  }
  if (auto levels = log::parse_output_levels(c.log_level); !levels) {
    return std::move(levels).error().context("--log_output_level (LOG_OUTPUT_LEVEL)");
  }
  if (c.self_verify_interval_s < 0) {
    return make_error(
        Errc::InvalidArgument,
        "--self-verify-interval (AMBIENT_SELF_VERIFY_INTERVAL) must be >= 0 (0 = off)");
  }
  if (c.admin_uid < -1) {
    return make_error(Errc::InvalidArgument, "--admin-uid (AMBIENT_ADMIN_UID) " +
                                                 std::to_string(c.admin_uid) +
                                                 " is not a uid (-1 = none)");
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
  if (c.enroll_namespaces.empty()) {
    struct stat st {};
    const bool installer_kubeconfig = ::stat(c.plugin_kubeconfig_path().c_str(), &st) == 0;
    if (c.kubeconfig.empty() && c.kubernetes_service_host.empty() && !installer_kubeconfig) {
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
  return {};
}

}  // namespace

Result<ParseOutcome> parse_config(int argc, const char* const* argv,
                                  const std::function<const char*(const char*)>& getenv) {
  ParseOutcome out;
  // The chart's spelling of ISTIO_OWNED_CNI_CONFIG_FILENAME; the option's own
  // variable and flag win over it.
  if (const char* v = getenv("ISTIO_OWNED_CNI_CONF_FILENAME")) {
    out.config.istio_owned_cni_config_filename = v;
  }
  for (const auto& o : kOptions) {
    if (const char* v = getenv(o.env)) {
      AMBIENT_RETURN_IF_ERROR(assign(o, out.config, v, std::string("env ") + o.env));
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--version" || arg == "version") {
      out.version = true;
      return out;
    }
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
    for (const auto& o : kOptions) {
      if (name == o.flag) opt = &o;
    }
    if (!opt) return make_error(Errc::InvalidArgument, "unknown flag --" + name + " (see --help)");
    if (!has_value) {
      if (is_bool(*opt)) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return make_error(Errc::InvalidArgument, "flag --" + name + " needs a value");
      }
    }
    AMBIENT_RETURN_IF_ERROR(assign(*opt, out.config, value, "flag --" + name));
  }
  AMBIENT_RETURN_IF_ERROR(validate(out.config));
  return out;
}

}  // namespace ambient::agent
