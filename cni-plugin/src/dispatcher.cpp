#include "dispatcher.h"

#include <algorithm>
#include <chrono>

#include "cni_result.h"
#include "lib/cni_event.h"
#include "lib/version.h"
#include "logger.h"
#include "netconf.h"

namespace ambient::cni {

namespace {

using namespace std::chrono_literals;
constexpr auto kAgentTimeout = 5s;

constexpr std::string_view kHelp = R"(istio-cni: Istio ambient chained CNI plugin (ambient-cni)

The container runtime runs this binary for every pod sandbox, after the
primary CNI. It prints the previous result unchanged and, for pods that may
be enrolled in ambient, tells the node agent over
<cni_agent_run_dir>/pluginevent.sock (POST /cmdadd, /cmddel). ADD fails
if the agent answers anything but 200. When the agent cannot be reached (no
socket, or no answer within 5 s), the plugin asks the API server instead and
lets the pod start only if the pod is certainly not ambient. Log lines (JSON)
go to stderr and, when <cni_agent_run_dir>/log.sock exists, to the agent's log.

Usage: istio-cni [--help | --version]   (configuration on stdin, parameters in env)

Environment (CNI spec):
  CNI_COMMAND          ADD, DEL, CHECK, STATUS, GC or VERSION; unset prints the
                       plugin and supported CNI versions to stderr
  CNI_CONTAINERID      container ID (ADD, DEL, CHECK)
  CNI_NETNS            pod network namespace path (ADD, CHECK; optional for DEL)
  CNI_IFNAME           interface name (ADD, DEL, CHECK)
  CNI_PATH             plugin search path (required by every command but VERSION)
  CNI_ARGS             K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID,
                       K8S_POD_INFRA_CONTAINER_ID, IgnoreUnknown
  CNI_NETNS_OVERRIDE   1/true: skip the check that CNI_NETNS is not our own netns

Configuration keys (stdin): cniVersion, name, type, prevResult,
  plugin_log_level, cni_agent_run_dir, ambient_enabled, enablement_selectors,
  exclude_namespaces, pod_namespace, native_nftables,
  enable_ambient_detection_retry. Keys match case-insensitively; unknown keys
  are ignored; a wrong type is an error.
)";

struct CniError {
  int code;
  std::string msg;
  std::string details;
};

void print_error(const std::function<void(std::string_view)>& out, const CniError& e) {
  json::Json j = json::Json::object();
  j["code"] = e.code;
  j["msg"] = e.msg;
  if (!e.details.empty()) j["details"] = e.details;
  out(print_json(j));
}

struct Env {
  std::string command, container_id, netns, ifname, args, path, netns_override;
  bool has_container_id = false, has_netns = false, has_ifname = false, has_path = false;
};

// libcni's ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$ (std::regex would set up the C++
// locale on every exec).
bool valid_name(std::string_view s) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (s.empty() || !alnum(s[0])) return false;
  return std::all_of(s.begin() + 1, s.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '.' || c == '-'; });
}

std::optional<CniError> validate_ifname(const std::string& ifname) {
  if (ifname.empty()) return CniError{kErrInvalidEnv, "interface name is empty", ""};
  if (ifname.size() > 15) {
    return CniError{kErrInvalidEnv, "interface name is too long",
                    "interface name should be less than 16 characters"};
  }
  if (ifname == "." || ifname == "..")
    return CniError{kErrInvalidEnv, "interface name is . or ..", ""};
  for (unsigned char c : ifname) {
    if (c == '/' || c == ':' || std::isspace(c)) {
      return CniError{kErrInvalidEnv, "interface name contains / or : or whitespace characters",
                      ""};
    }
  }
  return std::nullopt;
}

// Upstream's skeleton prints this for any invocation without CNI_COMMAND.
std::string about() {
  std::string s =
      "CNI plugin istio-cni " + std::string(kVersion) + "\nCNI protocol versions supported: ";
  const auto& v = supported_versions();
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s + "\n";
}

bool truthy(const std::string& v) { return v == "1" || v == "true"; }

class Plugin {
 public:
  Plugin(PluginIo& io, AgentClient& agent) : io_(io), agent_(agent), log_(io.err) {}

  // The lines kept since configure_log, to the agent in one request.
  void forward_logs() {
    if (log_socket_.empty() || log_.kept().empty()) return;
    io_.send_log(log_socket_, log_body(log_.kept()));
  }

  int run() {
    // Flags first: a person asking must get an answer even with CNI_COMMAND
    // left set in the shell. Upstream's binary ignores its arguments and
    // answers everything without CNI_COMMAND with about() on stderr; an
    // explicit request gets the same text on stdout.
    if (is_answered_flag(io_.args)) {
      const std::string& flag = io_.args.front();
      io_.out(flag == "--version" || flag == "-v" ? about() : std::string(kHelp));
      return 0;
    }
    auto command = env("CNI_COMMAND");
    if (!command) {
      io_.err(about());
      return 0;
    }
    env_.command = *command;
    if (env_.command == "VERSION") {
      json::Json j = {{"cniVersion", std::string(kCurrentVersion)},
                      {"supportedVersions", supported_versions()}};
      io_.out(j.dump() + "\n");
      return 0;
    }
    static const std::vector<std::string> kKnown = {"ADD", "DEL", "CHECK", "GC", "STATUS"};
    if (std::find(kKnown.begin(), kKnown.end(), env_.command) == kKnown.end()) {
      return fail({kErrInvalidEnv, "unknown CNI_COMMAND: " + env_.command, ""});
    }
    if (auto e = read_env()) return fail(*e);

    auto doc = parse_stdin(io_.stdin_data);
    if (!doc) return fail({kErrDecodingFailure, doc.error().describe(), ""});
    std::string version = "0.1.0";
    if (const auto* v = json::find(*doc, "cniVersion")) {
      if (!v->is_string()) {
        return fail({kErrDecodingFailure, "cniVersion must be a string", ""});
      }
      version = v->get<std::string>();
      if (version.empty()) version = "0.1.0";
    }
    if (!is_supported_version(version)) {
      return fail({kErrIncompatibleVersion, "incompatible CNI versions",
                   "config is \"" + version + "\", plugin supports " + joined_versions()});
    }
    std::string name;
    if (const auto* n = json::find(*doc, "name"); n && n->is_string()) name = n->get<std::string>();
    if (name.empty()) return fail({kErrInvalidNetworkConfig, "missing network name", ""});
    if (!valid_name(name)) {
      return fail({kErrInvalidNetworkConfig, "invalid characters found in network name", name});
    }

    if (env_.command == "CHECK" || env_.command == "GC" || env_.command == "STATUS") {
      const char* min = env_.command == "CHECK" ? "0.4.0" : "1.1.0";
      if (compare_versions(version, min) < 0) {
        return fail({kErrIncompatibleVersion, "config version does not allow " + env_.command, ""});
      }
    }
    if (env_.command == "ADD" || env_.command == "DEL" || env_.command == "CHECK") {
      if (!valid_name(env_.container_id)) {
        return fail({kErrInvalidEnv, "invalid characters in containerID", env_.container_id});
      }
      if (auto e = validate_ifname(env_.ifname)) return fail(*e);
    }

    if (env_.command == "ADD") return cmd_add(*doc, version);
    if (env_.command == "DEL") return cmd_del(*doc);
    return 0;  // CHECK, GC, STATUS: nothing to check or collect (as upstream)
  }

 private:
  std::optional<std::string> env(const char* name) { return io_.getenv(name); }

  static std::string joined_versions() {
    std::string s = "[";
    for (const auto& v : supported_versions()) s += (s.size() > 1 ? " " : "") + v;
    return s + "]";
  }

  // Required variables per command, reported together as the skeleton does.
  std::optional<CniError> read_env() {
    auto get = [&](const char* n, std::string& dst, bool& has) {
      if (auto v = env(n); v && !v->empty()) {
        dst = *v;
        has = true;
      }
    };
    get("CNI_CONTAINERID", env_.container_id, env_.has_container_id);
    get("CNI_NETNS", env_.netns, env_.has_netns);
    get("CNI_IFNAME", env_.ifname, env_.has_ifname);
    get("CNI_PATH", env_.path, env_.has_path);
    bool unused = false;
    get("CNI_ARGS", env_.args, unused);
    get("CNI_NETNS_OVERRIDE", env_.netns_override, unused);

    const bool add_check = env_.command == "ADD" || env_.command == "CHECK";
    const bool del = env_.command == "DEL";
    std::vector<std::string> missing;
    if ((add_check || del) && !env_.has_container_id) missing.emplace_back("CNI_CONTAINERID");
    if (add_check && !env_.has_netns) missing.emplace_back("CNI_NETNS");
    if ((add_check || del) && !env_.has_ifname) missing.emplace_back("CNI_IFNAME");
    if (!env_.has_path) missing.emplace_back("CNI_PATH");
    if (missing.empty()) return std::nullopt;
    std::string list;
    for (size_t i = 0; i < missing.size(); ++i) list += (i ? "," : "") + missing[i];
    return CniError{kErrInvalidEnv, "required env variables [" + list + "] missing", ""};
  }

  int fail(const CniError& e) {
    print_error(io_.out, e);
    return 1;
  }

  int internal(const Error& e) { return fail({kErrInternal, e.describe(), ""}); }

  // The result printed for every successful ADD: prevResult, untouched in
  // content, in the configuration's version.
  Result<std::string> pass_through(const PluginConf& conf) {
    const std::string version = conf.effective_version();
    CniResult r;
    if (conf.prev_result) {
      auto parsed = parse_result(*conf.prev_result, version);
      if (!parsed) return std::move(parsed).error().context("could not parse prevResult");
      r = std::move(*parsed);
    }
    AMBIENT_ASSIGN_OR_RETURN(json::Json out, render_result(r, version));
    return print_json(out);
  }

  int cmd_add(const json::Json& doc, const std::string& version) {
    (void)version;
    auto conf = parse_conf(doc);
    if (!conf) return internal(conf.error());
    // Parse prevResult before anything else so a bad one fails every path.
    auto result = pass_through(*conf);
    if (!result) return internal(result.error());
    auto args = parse_cni_args(env_.args);
    if (!args) return internal(std::move(args).error().context("failed to load args"));
    configure_log(*conf);
    const std::string pod = args->pod_namespace + "/" + args->pod_name;

    // Checks that need neither the agent nor the API come first
    // (docs/cni-plugin.md#exclusions). The agent's own pod must start while
    // no agent runs: after a reboot, before the agent has written the
    // kubeconfig (docs/field-lessons.md#p3), and during an upgrade, where the
    // fail-closed API fallback would otherwise keep the replacement agent
    // from ever starting.
    if (args->pod_name.rfind("istio-cni-node-", 0) == 0 &&
        args->pod_namespace == conf->pod_namespace) {
      log_.log(Logger::Info, "skipping the istio-cni agent's own pod", pod);
      return finish_add(*result);
    }
    if (args->pod_name.empty() || args->pod_namespace.empty()) {
      log_.log(Logger::Debug, "not a kubernetes pod", "");
      return finish_add(*result);
    }
    const auto& excl = conf->exclude_namespaces;
    if (std::find(excl.begin(), excl.end(), args->pod_namespace) != excl.end()) {
      log_.log(Logger::Debug, "pod namespace is excluded", pod);
      return finish_add(*result);
    }
    if (!conf->ambient_enabled) {
      log_.log(Logger::Debug, "ambient is disabled; sidecar mode is not implemented", pod);
      return finish_add(*result);
    }

    CniEvent ev{.netns = env_.netns,
                .pod_name = args->pod_name,
                .pod_namespace = args->pod_namespace,
                .pod_uid = args->pod_uid,
                .container_id = env_.container_id,
                .ifname = env_.ifname};
    if (conf->prev_result) {
      auto r = parse_result(*conf->prev_result, conf->effective_version());
      for (const auto& ip : r->ips) {
        ev.ips.push_back({.interface = ip.interface, .address = ip.address, .gateway = ip.gateway});
      }
    }
    auto reply = post(*conf, kCmdAddPath, encode_event(ev));
    if (!reply) return agent_unreachable(*conf, *args, std::move(reply).error(), *result);
    if (reply->status != 200) {
      std::string msg = "istio-cni cmdAdd failed to contact node Istio CNI agent: " +
                        status_error(*reply).describe();
      log_.log(Logger::Error, msg, pod);
      return fail({kErrInternal, msg, ""});
    }
    log_.log(Logger::Info, "pod enrolled or skipped by the node agent", pod);
    return finish_add(*result);
  }

  // The agent is down (restart, upgrade, crash loop). Decide as upstream's
  // plugin does, through the API: pods that are not ambient must not stall
  // on a missing agent. Everything else fails closed
  // (docs/cni-plugin.md#fail-closed): an ambient pod, and any pod the API
  // could not classify, since a pod must never start unredirected because
  // of an error. The agent's own pod never gets here (own-pod exclusion).
  int agent_unreachable(const PluginConf& conf, const CniArgs& args, Error agent_err,
                        const std::string& result) {
    const std::string pod = args.pod_namespace + "/" + args.pod_name;
    // The operator must see which socket was tried; only a failed connect
    // names it (a timeout or a reset does not), so it is added after
    // upstream's wording rather than into it.
    const std::string sock = socket_path(conf);
    std::string agent_part =
        std::move(agent_err).context("failed to send event request").describe();
    if (agent_part.find(sock) == std::string::npos) agent_part += " (agent socket " + sock + ")";
    const std::string agent_msg =
        "istio-cni cmdAdd failed to contact node Istio CNI agent: " + agent_part;
    auto undecided = [&](const Error& api_err) {
      std::string msg =
          agent_msg +
          "; and the API server could not tell whether the pod is ambient: " + api_err.describe();
      log_.log(Logger::Error, msg, pod);
      return fail({kErrInternal, std::move(msg), ""});
    };

    const std::string kubeconfig = run_dir(conf) + "/istio-cni-kubeconfig";
    auto api = io_.kube_api ? io_.kube_api(kubeconfig) : [&]() -> Result<std::unique_ptr<KubeApi>> {
      auto k = KubeconfigApi::load(kubeconfig);
      if (!k) return std::move(k).error();
      return std::unique_ptr<KubeApi>(std::move(*k));
    }();
    if (!api) return undecided(std::move(api).error().context("failed to createNewK8sClient"));
    auto selectors = k8s::parse_enablement_selectors(conf.enablement_selectors);
    if (!selectors) {
      return undecided(std::move(selectors).error().context(
          "failed to instantiate ambient enablement selector"));
    }
    const int retries =
        conf.enable_ambient_detection_retry ? kDetectionRetriesLong : kDetectionRetries;
    auto ambient = is_ambient_pod(**api, args.pod_namespace, args.pod_name, *selectors,
                                  {.attempts = 1 + retries, .sleep = io_.sleep});
    if (!ambient) return undecided(std::move(ambient).error());
    if (*ambient) {
      log_.log(Logger::Error, agent_msg, pod);
      return fail({kErrInternal, agent_msg, ""});
    }
    log_.log(Logger::Info, "agent unreachable; the pod is not ambient, letting it start", pod);
    return finish_add(result);
  }

  int finish_add(const std::string& result) {
    io_.out(result);
    if (!truthy(env_.netns_override) && io_.netns_identity) {
      std::string mine = io_.netns_identity("/proc/self/ns/net");
      std::string theirs = io_.netns_identity(env_.netns);
      if (!mine.empty() && mine == theirs) {
        return fail({kErrInvalidNetNs,
                     "netns \"" + env_.netns + "\" is the plugin's own network namespace", ""});
      }
    }
    return 0;
  }

  static std::string run_dir(const PluginConf& conf) {
    return conf.cni_agent_run_dir.empty() ? "/var/run/istio-cni" : conf.cni_agent_run_dir;
  }

  static std::string socket_path(const PluginConf& conf) {
    return run_dir(conf) + "/" + std::string(kPluginEventSocket);
  }

  // Once the config is known, as upstream does: the level, and the agent's
  // log channel if its socket exists now; earlier lines stay on stderr.
  void configure_log(const PluginConf& conf) {
    const std::string sock = run_dir(conf) + "/" + std::string(kPluginLogSocket);
    if (io_.log_socket_exists && io_.send_log && io_.log_socket_exists(sock)) {
      log_socket_ = sock;
      log_.keep_lines();
    }
    log_.set_level(conf.plugin_log_level.empty() ? "info" : conf.plugin_log_level);
  }

  // One POST to the agent; transport failures are errors, any answer is not.
  Result<HttpReply> post(const PluginConf& conf, std::string_view target, const std::string& body) {
    return agent_.post(socket_path(conf), target, body,
                       std::chrono::duration_cast<std::chrono::milliseconds>(kAgentTimeout));
  }

  // Upstream's wording: "unable to push CNI event (status code N): <body>".
  static Error status_error(const HttpReply& reply) {
    std::string text = reply.body;
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return make_error(Errc::Unavailable, "unable to push CNI event (status code " +
                                             std::to_string(reply.status) + "): " + text);
  }

  // DEL never fails once the configuration is valid (CNI spec): the agent
  // is told so it can release the pod at once, but an agent that is down,
  // or an upstream agent without /cmddel, must not block teardown.
  int cmd_del(const json::Json& doc) {
    auto conf = parse_conf(doc);
    if (!conf) return internal(conf.error());
    auto args = parse_cni_args(env_.args);
    if (!args) return internal(std::move(args).error().context("failed to load args"));
    configure_log(*conf);
    const auto& excl = conf->exclude_namespaces;
    if (!conf->ambient_enabled || args->pod_name.empty() || args->pod_namespace.empty() ||
        std::find(excl.begin(), excl.end(), args->pod_namespace) != excl.end()) {
      return 0;
    }
    CniEvent ev{.netns = env_.netns,
                .pod_name = args->pod_name,
                .pod_namespace = args->pod_namespace,
                .pod_uid = args->pod_uid,
                .container_id = env_.container_id,
                .ifname = env_.ifname};
    auto r = post(*conf, kCmdDelPath, encode_event(ev));
    if (!r || r->status != 200) {
      log_.log(Logger::Warn,
               "could not tell the node agent about DEL (ignored): " +
                   (r ? status_error(*r).describe() : r.error().describe()),
               args->pod_namespace + "/" + args->pod_name);
    }
    return 0;
  }

  PluginIo& io_;
  AgentClient& agent_;
  Logger log_;
  std::string log_socket_;  // where the kept lines go; empty: nowhere
  Env env_;
};

}  // namespace

Result<CniArgs> parse_cni_args(std::string_view args) {
  CniArgs out;
  if (args.empty()) return out;
  bool ignore_unknown = false;
  std::vector<std::pair<std::string, std::string>> pairs;
  size_t start = 0;
  while (start <= args.size()) {
    size_t end = args.find(';', start);
    if (end == std::string_view::npos) end = args.size();
    std::string_view item = args.substr(start, end - start);
    auto eq = item.find('=');
    if (eq == std::string_view::npos || item.find('=', eq + 1) != std::string_view::npos) {
      return make_error(Errc::InvalidArgument, "ARGS: invalid pair \"" + std::string(item) + "\"");
    }
    pairs.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    start = end + 1;
  }
  for (const auto& [k, v] : pairs) {
    if (k == "IgnoreUnknown") {
      std::string lower = v;
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      if (lower == "1" || lower == "true") {
        ignore_unknown = true;
      } else if (lower != "0" && lower != "false") {
        return make_error(
            Errc::InvalidArgument,
            "ARGS: error parsing value of pair \"IgnoreUnknown\": \"" + v + "\" is not a boolean");
      }
    }
  }
  for (const auto& [k, v] : pairs) {
    if (k == "K8S_POD_NAME")
      out.pod_name = v;
    else if (k == "K8S_POD_NAMESPACE")
      out.pod_namespace = v;
    else if (k == "K8S_POD_UID")
      out.pod_uid = v;
    else if (k == "K8S_POD_INFRA_CONTAINER_ID")
      out.infra_container_id = v;
    else if (k != "IgnoreUnknown" && !ignore_unknown) {
      return make_error(Errc::InvalidArgument, "ARGS: unknown args [\"" + k + "\"]");
    }
  }
  return out;
}

bool is_answered_flag(const std::vector<std::string>& args) {
  if (args.empty()) return false;
  const std::string& a = args.front();
  return a == "--version" || a == "-v" || a == "--help" || a == "-h";
}

int run_plugin(PluginIo& io, AgentClient& agent) {
  Plugin plugin(io, agent);
  int rc = 1;
  try {
    rc = plugin.run();
  } catch (const std::exception& e) {
    print_error(io.out, {kErrInternal, std::string("istio-cni panicked: ") + e.what(), ""});
  } catch (...) {
    print_error(io.out, {kErrInternal, "istio-cni panicked", ""});
  }
  // Last, after the answer is out: the agent's log server can cost the run
  // at most send_log's budget and can never change its outcome.
  try {
    plugin.forward_logs();
  } catch (...) {
  }
  return rc;
}

}  // namespace ambient::cni
